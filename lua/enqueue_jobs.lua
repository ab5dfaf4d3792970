-- enqueue_jobs: adds jobs to one queue partition (rules J1-J3, docs/jobs.md).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] request id: a retry of the call (same id) looks up each job before adding it, and
--         "<base>req:<request id>" remembers the first try for a minute
-- ARGV[2..]: one record of 12 values per job: id, handler, arguments (msgpack), priority
--       (-1000..1000), delay ms ("" for none), run-at ms since the epoch (""), deadline ms
--       since the epoch (""), "1" to drop the job at its deadline (else "0"), timeout ms (""),
--       max attempts, backoff "<first ms>,<max ms>" (""), result ttl ms ("")
--       An id "=<key>" is the id of idempotency key <key>, looked up before it is added.
-- Returns: a string of two characters per job: the status letter of the job with that id
--          (S, Q, R, C, F or X), then "1" when this call created it, "0" when it was there
--          already (the same id enqueued before: an idempotency key that is held, or a
--          retried call)
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local FIELDS = 12
local request = ARGV[1]
if type(request) ~= 'string' or #request < 1 or #request > 100 then
  fail('INVALID_ARGUMENT', 'request id must be 1-100 bytes')
end
if #ARGV == 1 or (#ARGV - 1) % FIELDS ~= 0 then
  fail('INVALID_ARGUMENT', 'enqueue takes records of ' .. FIELDS .. ' values')
end
local function opt_int(value, name, min)
  if value ~= '' then arg_int(value, name, min, JOB_MAX_INT) end
end
-- Every record is checked before the first write; the writes then read the checked text.
for i = 2, #ARGV, FIELDS do
  arg_id(ARGV[i], 'job id')
  arg_id(ARGV[i + 1], 'handler name')
  arg_int(ARGV[i + 3], 'priority', -JOB_MAX_PRIORITY, JOB_MAX_PRIORITY)
  opt_int(ARGV[i + 4], 'delay ms', 0)
  opt_int(ARGV[i + 5], 'run at', 0)
  opt_int(ARGV[i + 6], 'deadline', 0)
  local drop, backoff = ARGV[i + 7], ARGV[i + 10]
  if drop ~= '0' and drop ~= '1' then fail('INVALID_ARGUMENT', 'drop flag must be 0 or 1') end
  opt_int(ARGV[i + 8], 'timeout ms', 1)
  arg_int(ARGV[i + 9], 'max attempts', 1, 1000)
  if backoff ~= '' then
    local first_ms, max_ms = string.match(backoff, '^(%d+),(%d+)$')
    if not first_ms or arg_int(first_ms, 'backoff first ms', 1, JOB_MAX_INT)
        > arg_int(max_ms, 'backoff max ms', 1, JOB_MAX_INT) then
      fail('INVALID_ARGUMENT', 'backoff must be "<first ms>,<max ms>" with first <= max')
    end
  end
  opt_int(ARGV[i + 11], 'result ttl ms', 0)
  if ARGV[i + 4] ~= '' and ARGV[i + 5] ~= '' then
    fail('INVALID_ARGUMENT', 'a job takes a delay or a run-at time, not both')
  end
end

local now = now_ms()
-- Fresh ids are unique: only a retried call, or an idempotency key, can meet a job of its id.
local retried = not redis.call('SET', q.base .. 'req:' .. request, '1', 'NX', 'PX', 60000)
local scheduled_key = q.base .. 'scheduled'
local answers, woke, ready = {}, false, {}
-- One field list serves every job: HSET reads its first n entries.
local fields, n = {}, 0
local function put(name, value)
  fields[n + 1] = name
  fields[n + 2] = value
  n = n + 2
end
for i = 2, #ARGV, FIELDS do
  local id, priority, deadline = ARGV[i], ARGV[i + 3], ARGV[i + 6]
  local key = job_key(q, id)
  local keyed = string.byte(id) == 61 -- '=': an idempotency key's job
  local existing = (retried or keyed) and redis.call('HGET', key, 's')
  if existing then
    answers[#answers + 1] = job_status(q, id, existing) .. '0'
  else
    n = 0
    put('h', ARGV[i + 1])
    put('a', ARGV[i + 2])
    put('e', now)
    if priority ~= '0' then put('p', priority) end
    if deadline ~= '' then put('d', deadline) end
    if ARGV[i + 7] == '1' then put('D', '1') end
    if ARGV[i + 8] ~= '' then put('t', ARGV[i + 8]) end
    if ARGV[i + 9] ~= '1' then put('m', ARGV[i + 9]) end
    if ARGV[i + 10] ~= '' then put('b', ARGV[i + 10]) end
    local ttl = ARGV[i + 11]
    if ttl ~= '' and tonumber(ttl) ~= JOB_DEFAULT_RESULT_TTL_MS then put('T', ttl) end
    if keyed then
      put('k', string.sub(id, 2))
      -- The done list of an earlier job of this key would wake this job's waiters at once.
      redis.call('DEL', q.base .. 'done:' .. id)
    end
    local at
    if ARGV[i + 5] ~= '' then at = tonumber(ARGV[i + 5]) end
    if ARGV[i + 4] ~= '' then at = now + tonumber(ARGV[i + 4]) end
    local status = JOB_QUEUED
    if at and at > now then
      status = JOB_SCHEDULED
      put('r', at)
      redis.call('ZADD', scheduled_key, at, id)
      -- Idle workers sleep until the earliest scheduled job: a new earliest one wakes them.
      if not woke and redis.call('ZRANGE', scheduled_key, 0, 0)[1] == id then woke = true end
    end
    put('s', status)
    redis.call('HSET', key, unpack(fields, 1, n))
    if status == JOB_QUEUED then
      woke = true
      if deadline ~= '' then
        job_push_ready(q, id, priority, tonumber(deadline), false)
      else
        -- Plain jobs join their lane in one push per lane and call.
        local lane = ready[priority]
        if not lane then
          lane = {}
          ready[priority] = lane
        end
        lane[#lane + 1] = id
      end
    end
    answers[#answers + 1] = status .. '1'
  end
end
for priority, ids in pairs(ready) do
  if redis.call('RPUSH', q.base .. 'ready:' .. priority, unpack(ids)) == #ids then
    local lane, rank = lane_of(tonumber(priority), nil)
    redis.call('ZADD', q.lanes, rank, lane)
  end
end
if woke then job_wake(q) end
return table.concat(answers)
