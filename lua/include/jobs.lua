-- Jobs (docs/jobs.md): the keys of a queue partition, its lanes, and the moves of one job
-- between them. A job is one hash, `<base>job:<id>`, whose fields are named by one letter to
-- keep a pending job small; fields at their default value are not stored:
--   h handler   a arguments (msgpack)   s status   e enqueued at (server ms)
--   p priority (0)   r run at   d deadline   D "1": drop the job at its deadline, else fail it
--   t timeout ms   m max attempts (1)   b backoff "<first ms>,<max ms>"   T result ttl ms
--   k idempotency key   f failed attempts   l leases lost   c the latest claim, as its entry
--   in `running` ("<token> <node> <started ms> <result ttl ms>")   F finished at   x error
--   o result (msgpack)
-- A claim writes nothing into the hash (rule J5): a running job stays "Q" there, and its
-- claim lives in the partition's `running` hash, so that claims and reports of a batch of
-- jobs cost one call each for the batch, not one per job.
-- @requires args

local JOB_SCHEDULED, JOB_QUEUED, JOB_RUNNING = 'S', 'Q', 'R'
local JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED = 'C', 'F', 'X'
local JOB_DEFAULT_LEASE_MS, JOB_LEASE_GRACE_MS = 30000, 5000
local JOB_DEFAULT_RESULT_TTL_MS, JOB_DEAD_TTL_MS = 86400000, 604800000
local JOB_DEFAULT_AGING_MS, JOB_MAX_LEASES_LOST = 1000, 8
local JOB_MAX_PRIORITY, JOB_MAX_INT = 1000, 9007199254740992

-- The keys of a queue partition, from any of its keys that ends in `suffix`. Only the base is
-- formatted here: each operation appends the kinds it touches (docs/keys.md).
local function queue_keys(key, suffix)
  local base = string.sub(key, 1, #key - #suffix)
  return { base = base, lanes = base .. 'lanes', running = base .. 'running' }
end

-- The keys of a partition-wide operation, called with the partition's `lanes` key.
local function lanes_keys(KEYS)
  local key = KEYS[1]
  if type(key) ~= 'string' or #key <= 5 or string.sub(key, -5) ~= 'lanes' then
    fail('INVALID_ARGUMENT', 'KEYS[1] must be the lanes key of a queue partition')
  end
  return queue_keys(key, 'lanes')
end

-- The keys of a one-job operation, called with the job's hash `<base>job:<id>`.
local function job_call_keys(KEYS, id)
  local key, suffix = KEYS[1], 'job:' .. id
  if type(key) ~= 'string' or #key <= #suffix or string.sub(key, -#suffix) ~= suffix then
    fail('INVALID_ARGUMENT', 'KEYS[1] must be the hash of job ' .. id)
  end
  return queue_keys(key, suffix)
end

local function job_key(q, id) return q.base .. 'job:' .. id end

local function opt_num(value)
  if value then return tonumber(value) end
  return nil
end

-- A lane holds the ready jobs of one priority: `ready:<p>`, a list in enqueue order, or
-- `due:<p>`, jobs with a deadline by deadline (EDF). `lanes` scores each non-empty lane by
-- its rank: 2p, or 2p + 1 for a deadline lane, which goes first within its priority.
local function lane_of(priority, deadline)
  if deadline then return 'd' .. priority, 2 * priority + 1 end
  return 'f' .. priority, 2 * priority
end

local function lane_key(q, lane)
  if string.sub(lane, 1, 1) == 'd' then return q.base .. 'due:' .. string.sub(lane, 2) end
  return q.base .. 'ready:' .. string.sub(lane, 2)
end

-- Makes job `id` ready: at the tail of its lane, or at its head when `front` (a job that had
-- already reached the front: released, or back from a lost lease).
local function job_push_ready(q, id, priority, deadline, front)
  local lane, rank = lane_of(priority, deadline)
  local size
  if deadline then
    redis.call('ZADD', q.base .. 'due:' .. priority, deadline, id)
    size = redis.call('ZCARD', q.base .. 'due:' .. priority)
  elseif front then
    size = redis.call('LPUSH', q.base .. 'ready:' .. priority, id)
  else
    size = redis.call('RPUSH', q.base .. 'ready:' .. priority, id)
  end
  if size == 1 then redis.call('ZADD', q.lanes, rank, lane) end
end

-- Removes a job that is still waiting in its lane (a cancel, an expired deadline).
local function job_leave_lane(q, id, priority, deadline)
  local lane = lane_of(priority, deadline)
  local key = lane_key(q, lane)
  if deadline then redis.call('ZREM', key, id) else redis.call('LREM', key, 1, id) end
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', q.lanes, lane) end
end

-- Wakes one idle worker (rule J8): the marker list holds at most one element.
local function job_wake(q)
  local wake = q.base .. 'wake'
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, '1') end
end

-- The claim of a running job, from the `running` hash: "<token> <node> <started ms> <result
-- ttl ms>" (rule J5), or nil.
local function job_claim_of(entry)
  if not entry then return nil end
  local token, node, started, ttl = string.match(entry, '^(%d+) (%S+) (%d+) (%d+)$')
  return {
    token = tonumber(token), node = node, started = started, ttl = tonumber(ttl), entry = entry,
  }
end

-- Forgets the claims of `ids`, which `node` held (ids: a list of at most a few thousand).
local function job_drop_claims(q, node, ids)
  if #ids == 0 then return end
  redis.call('HDEL', q.running, unpack(ids))
  local held = q.base .. 'held:' .. node
  redis.call('SREM', held, unpack(ids))
  if redis.call('SCARD', held) == 0 then redis.call('ZREM', q.base .. 'nodes', node) end
end

-- Whether anyone waits for a job of the partition: most calls find nobody, and then need not
-- ask about each job they end.
local function job_anyone_waits(q)
  if q.waits == nil then q.waits = redis.call('EXISTS', q.base .. 'waiting') == 1 end
  return q.waits
end

-- Ends a job: its record lives `ttl` more ms (0: deleted now), and callers waiting for its
-- result are woken (rule J9).
local function job_finish(q, id, ttl)
  local key = job_key(q, id)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
  if job_anyone_waits(q) and redis.call('SREM', q.base .. 'waiting', id) == 1 then
    local done = q.base .. 'done:' .. id
    redis.call('RPUSH', done, '1')
    redis.call('PEXPIRE', done, math.max(ttl, 1000))
  end
end

local function job_result_ttl(t)
  return opt_num(t) or JOB_DEFAULT_RESULT_TTL_MS
end

-- Fails a job for good: into the dead-letter set unless `dead` is false (a missed deadline).
local function job_fail(q, id, now, error_text, result_ttl, dead)
  redis.call('HSET', job_key(q, id), 's', JOB_FAILED, 'F', now, 'x', error_text)
  if dead then
    redis.call('ZADD', q.base .. 'dead', now, id)
    job_finish(q, id, JOB_DEAD_TTL_MS)
  else
    job_finish(q, id, job_result_ttl(result_ttl))
  end
end

-- A job whose deadline passed before it started is not run (rule J4): it is deleted when it
-- asked to be dropped, else it fails with DeadlineExceeded.
local function job_miss_deadline(q, id, now, drop, result_ttl)
  if drop then
    job_finish(q, id, 0)
  else
    job_fail(q, id, now, 'DeadlineExceeded: the deadline passed before the job started',
      result_ttl, false)
  end
end

-- Moves due scheduled jobs (delays, retry backoffs) to their lanes, at most `limit`; returns
-- how many were moved and whether more are due.
local function job_promote(q, now, limit)
  local scheduled = q.base .. 'scheduled'
  local due = redis.call('ZRANGE', scheduled, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local key = job_key(q, id)
    local f = redis.call('HMGET', key, 'p', 'd')
    redis.call('HSET', key, 's', JOB_QUEUED)
    job_push_ready(q, id, tonumber(f[1] or '0'), opt_num(f[2]), false)
  end
  if #due > 0 then redis.call('ZREM', scheduled, unpack(due)) end
  return #due, #due == limit
end

-- Ms until the earliest scheduled job is due (0 if one is due now), or -1 if none is.
local function job_next_due(q, now)
  local first = redis.call('ZRANGE', q.base .. 'scheduled', 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end

-- How long a node's claim on a job lasts unless renewed: the job's timeout plus a grace, or
-- the default (rule J5).
local function job_lease_ms(timeout)
  if timeout then return timeout + JOB_LEASE_GRACE_MS end
  return JOB_DEFAULT_LEASE_MS
end

-- Settles a batch of attempts that `node` ran (rule J6), from ARGV quintuples starting at
-- `first`: (job id, token, code, delay ms, value), code 'c' completed with result `value`,
-- 'f' failed with error `value` (retried after `delay` ms while attempts remain), 'F' failed
-- for good. Returns 1 per accepted report, 0 per report whose claim is no longer the job's
-- (its lease was lost, the job was cancelled, or this is a retry of a settled report).
local function job_settle(q, node, ARGV, first, now)
  local ids = {}
  for i = first, #ARGV, 5 do ids[#ids + 1] = ARGV[i] end
  if #ids == 0 then return {} end
  local entries = redis.call('HMGET', q.running, unpack(ids))
  local answers, accepted, claims, seen = {}, {}, {}, {}
  for n = 1, #ids do
    local claim = job_claim_of(entries[n])
    local i = first + (n - 1) * 5
    -- A claim settles once: a second report of it in the same call is turned away.
    if claim and claim.node == node and claim.token == tonumber(ARGV[i + 1])
        and not seen[ids[n]] then
      seen[ids[n]] = true
      answers[n] = 1
      accepted[#accepted + 1] = ids[n]
      claims[n] = claim
    else
      answers[n] = 0
    end
  end
  job_drop_claims(q, node, accepted)
  for n = 1, #ids do
    local claim = claims[n]
    if claim then
      local i = first + (n - 1) * 5
      local id, code, value = ids[n], ARGV[i + 2], ARGV[i + 4]
      local key = job_key(q, id)
      if code == 'c' then
        redis.call('HSET', key, 's', JOB_COMPLETED, 'F', now, 'o', value, 'c', claim.entry)
        job_finish(q, id, claim.ttl)
      else
        local f = redis.call('HMGET', key, 'm', 'f', 'p', 'd')
        local failures = tonumber(f[2] or '0') + 1
        redis.call('HSET', key, 'f', failures, 'c', claim.entry)
        local delay = tonumber(ARGV[i + 3])
        if code == 'F' or failures >= tonumber(f[1] or '1') then
          job_fail(q, id, now, value, claim.ttl, true)
        elseif delay > 0 then
          redis.call('HSET', key, 's', JOB_SCHEDULED, 'x', value, 'r', now + delay)
          local scheduled = q.base .. 'scheduled'
          redis.call('ZADD', scheduled, now + delay, id)
          if redis.call('ZRANGE', scheduled, 0, 0)[1] == id then job_wake(q) end
        else
          redis.call('HSET', key, 's', JOB_QUEUED, 'x', value)
          job_push_ready(q, id, tonumber(f[3] or '0'), opt_num(f[4]), false)
          job_wake(q)
        end
      end
    end
  end
  return answers
end

-- The settle reports of a call: quintuples (job id, token, code, delay ms, value) from ARGV
-- index `first`, checked before anything is written.
local function job_settle_args(ARGV, first)
  if (#ARGV - first + 1) % 5 ~= 0 then
    fail('INVALID_ARGUMENT', 'settle reports are (job id, token, code, delay ms, value) quintuples')
  end
  for i = first, #ARGV, 5 do
    arg_id(ARGV[i], 'job id')
    arg_int(ARGV[i + 1], 'token', 1, JOB_MAX_INT)
    local code = ARGV[i + 2]
    if code ~= 'c' and code ~= 'f' and code ~= 'F' then
      fail('INVALID_ARGUMENT', 'a settle code is c, f or F')
    end
    arg_int(ARGV[i + 3], 'retry delay ms', 0, JOB_MAX_INT)
  end
end

-- ARGV of heartbeat_jobs and release_jobs: a node id, then (job id, token) pairs from index
-- `first`.
local function job_claim_args(ARGV, first)
  local node = arg_id(ARGV[1], 'node id')
  if (#ARGV - first + 1) % 2 ~= 0 then
    fail('INVALID_ARGUMENT', 'claims are (job id, token) pairs')
  end
  for i = first, #ARGV, 2 do
    arg_id(ARGV[i], 'job id')
    arg_int(ARGV[i + 1], 'token', 1, JOB_MAX_INT)
  end
  return node
end

-- The status of job `id` as its callers see it: "R" while a claim of it lives in `running`.
local function job_status(q, id, stored)
  if stored == JOB_QUEUED and redis.call('HEXISTS', q.running, id) == 1 then
    return JOB_RUNNING
  end
  return stored
end
