-- sweep: bounded maintenance of one partition. Ends expired leases (rule 25) and deletes
-- terminal tasks past their TTL (rule 22). Idempotent; safe to run from many workers.
-- KEYS[1] the partition's lease index ("<base>leases"); its expiry and task indexes, event
--         stream and the tasks' keys are derived from it
-- ARGV[1] limit: at most this many items handled per call (1..10000)
-- ARGV[2] sweeper: the node sweeping, which takes the partition's sweep lock "<base>sweeping"
--         for ARGV[3] ms (1..60000) so that other workers skip the partition meanwhile; ""
--         sweeps without the lock (ARGV[3] is then "0")
-- Events: returned (per task and node whose units' leases it ended), removed
-- Returns: {leases reclaimed, tasks deleted, 1 if more items are due else 0, 1 if another
--          sweeper held the lock (nothing was swept) else 0, ms until the partition's earliest
--          lease ends (-1: no lease)}
-- Errors: DTQ_INVALID_ARGUMENT

local limit, sweeper, lock_ms = sweep_args(ARGV)
local now = now_ms()
local part = partition_task_keys(KEYS[1], 'leases', '')

-- The ms until the earliest lease of the partition ends, so that a sweeper can wake then.
local function next_lease_in()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end

local base = string.sub(KEYS[1], 1, #KEYS[1] - #'leases')
if not take_sweep_lock(base .. 'sweeping', sweeper, lock_ms) then
  return { 0, 0, 0, 1, next_lease_in() }
end
local looked, reclaimed = end_expired_leases(KEYS[1], now, limit)
local deleted = 0

-- Scores are finished_at + TTL, so every entry below `now` is past its TTL (rule 22: strictly).
local expired = redis.call('ZRANGE', part.expiry, '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, limit - looked)
for _, task_id in ipairs(expired) do
  local keys = partition_task_keys(KEYS[1], 'leases', task_id)
  local t = load_task(keys, task_id, '')
  if not t or not ACTIVE[t.status] then
    delete_task_data(keys, task_id)
    redis.call('ZREM', part.index, task_id)
    deleted = deleted + 1
    -- Without a task hash (its backstop TTL ended it) no version is known to have gone.
    if t then emit(keys, 'removed', task_id, t.version) end
  end
  redis.call('ZREM', part.expiry, task_id)
end

local more = 0
if #redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
    or #redis.call('ZRANGE', part.expiry, '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, 1) > 0 then
  more = 1
end
return { reclaimed, deleted, more, 0, next_lease_in() }
