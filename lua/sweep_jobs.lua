-- sweep_jobs: the bounded upkeep of one queue partition (rule J11): the jobs of a node whose
-- lease ran out go back to the front of their lanes (or fail after 8 lost leases), due
-- scheduled jobs become ready, queued jobs whose deadline passed are settled, and dead-letter
-- entries older than 7 days leave the set (their records expire with them).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] limit: the most nodes, scheduled jobs and missed deadlines handled in this call
--         (1..10000)
-- ARGV[2] sweeper: the node sweeping, which takes the partition's sweep lock
--         "<base>sweeping"; "" sweeps without the lock (ARGV[3] is then "0")
-- ARGV[3] lock ms (1..60000 with a sweeper)
-- Returns: {reclaimed, promoted, expired, more, wait}: jobs put back after a lost lease, due
--          jobs made ready, jobs settled at their deadline, 1 when more are due already
--          else 0, and the ms until the partition's next lease end or scheduled job (-1:
--          none); all 0 and wait -2 when another sweeper holds the lock
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local limit, sweeper, lock_ms = sweep_args(ARGV)
if not take_sweep_lock(q.base .. 'sweeping', sweeper, lock_ms) then
  return { 0, 0, 0, 0, -2 }
end

local now = now_ms()
local nodes_key = q.base .. 'nodes'
-- A node whose lease ran out lost every claim it held here: it died or stalled.
local lost = 0
local expired_nodes = redis.call('ZRANGE', nodes_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
for _, node in ipairs(expired_nodes) do
  local held = q.base .. 'held:' .. node
  local ids = redis.call('SMEMBERS', held)
  for _, id in ipairs(ids) do
    local key = job_key(q, id)
    local claim = job_claim_of(redis.call('HGET', q.running, id))
    local f = redis.call('HMGET', key, 'l', 'p', 'd', 'T')
    local losses = tonumber(f[1] or '0') + 1
    redis.call('HSET', key, 'l', losses)
    if claim then redis.call('HSET', key, 'c', claim.entry) end
    if losses >= JOB_MAX_LEASES_LOST then
      job_fail(q, id, now, 'LeaseLost: the job lost its lease ' .. losses ..
        ' times (its workers died or stalled)', f[4], true)
    else
      job_push_ready(q, id, tonumber(f[2] or '0'), opt_num(f[3]), true)
    end
    lost = lost + 1
  end
  if #ids > 0 then redis.call('HDEL', q.running, unpack(ids)) end
  redis.call('DEL', held)
  redis.call('ZREM', nodes_key, node)
end
local more = #expired_nodes == limit

local promoted, due_more = job_promote(q, now, limit)
more = more or due_more

-- Deadline lanes are ordered by deadline, so their missed jobs are found at their heads.
local expired = 0
local lanes = redis.call('ZRANGE', q.lanes, 0, -1)
for _, lane in ipairs(lanes) do
  if string.sub(lane, 1, 1) == 'd' and expired < limit then
    local key = lane_key(q, lane)
    local missed = redis.call('ZRANGE', key, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit - expired)
    for _, id in ipairs(missed) do
      local f = redis.call('HMGET', job_key(q, id), 'D', 'T')
      job_miss_deadline(q, id, now, f[1] == '1', f[2])
    end
    if #missed > 0 then
      redis.call('ZREM', key, unpack(missed))
      if redis.call('EXISTS', key) == 0 then redis.call('ZREM', q.lanes, lane) end
      expired = expired + #missed
    end
  end
end
more = more or expired == limit

redis.call('ZREMRANGEBYSCORE', q.base .. 'dead', '-inf', now - JOB_DEAD_TTL_MS)
if lost > 0 or promoted > 0 then job_wake(q) end

local wait = job_next_due(q, now)
local first_lease = redis.call('ZRANGE', nodes_key, 0, 0, 'WITHSCORES')
if #first_lease > 0 then
  local lease_wait = math.max(0, tonumber(first_lease[2]) - now)
  if wait < 0 or lease_wait < wait then wait = lease_wait end
end
return { lost, promoted, expired, more and 1 or 0, wait }
