-- enqueue_jobs: adds jobs to one queue partition (rules J1-J3, docs/jobs.md).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] request id: a retry of the call (same id) looks up each job before adding it, and
--         "<base>req:<request id>" remembers the first try for a minute
-- ARGV[2..]: one record of 12 values per job: id, handler, arguments (msgpack), priority
--       (-1000..1000), delay ms ("" for none), run-at ms since the epoch (""), deadline ms
--       since the epoch (""), "1" to drop the job at its deadline (else "0"), timeout ms (""),
--       max attempts, backoff "<first ms>,<max ms>" (""), result ttl ms ("")
--       An id "=<key>" is the id of idempotency key <key>, looked up before it is added.
-- Returns: per job, {status, created}: the status letter of the job with that id (S, Q, R,
--          C, F or X) and 1 when this call created it, 0 when it was there already (the same
--          id enqueued before: an idempotency key that is held, or a retried call)
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
  if value == '' then return nil end
  return arg_int(value, name, min, JOB_MAX_INT)
end
local jobs = {}
for i = 2, #ARGV, FIELDS do
  local backoff = ARGV[i + 10]
  if backoff ~= '' and not string.find(backoff, '^%d+,%d+$') then
    fail('INVALID_ARGUMENT', 'backoff must be "<first ms>,<max ms>"')
  end
  local drop = ARGV[i + 7]
  if drop ~= '0' and drop ~= '1' then fail('INVALID_ARGUMENT', 'drop flag must be 0 or 1') end
  jobs[#jobs + 1] = {
    id = arg_id(ARGV[i], 'job id'), handler = arg_id(ARGV[i + 1], 'handler name'),
    args = ARGV[i + 2],
    priority = arg_int(ARGV[i + 3], 'priority', -JOB_MAX_PRIORITY, JOB_MAX_PRIORITY),
    delay = opt_int(ARGV[i + 4], 'delay ms', 0), run_at = opt_int(ARGV[i + 5], 'run at', 0),
    deadline = opt_int(ARGV[i + 6], 'deadline', 0), drop = drop == '1',
    timeout = opt_int(ARGV[i + 8], 'timeout ms', 1),
    attempts = arg_int(ARGV[i + 9], 'max attempts', 1, 1000), backoff = backoff,
    ttl = opt_int(ARGV[i + 11], 'result ttl ms', 0),
  }
  if jobs[#jobs].delay and jobs[#jobs].run_at then
    fail('INVALID_ARGUMENT', 'a job takes a delay or a run-at time, not both')
  end
end

local now = now_ms()
-- Fresh ids are unique: only a retried call, or an idempotency key, can meet a job of its id.
local retried = not redis.call('SET', q.base .. 'req:' .. request, '1', 'NX', 'PX', 60000)
local answers, scheduled, woke = {}, false, false
local ready = {}
local fields
local function put(name, value) fields[#fields + 1] = name; fields[#fields + 1] = value end
for _, j in ipairs(jobs) do
  local key = job_key(q, j.id)
  local existing = (retried or string.sub(j.id, 1, 1) == '=') and redis.call('HGET', key, 's')
  if existing then
    answers[#answers + 1] = { job_status(q, j.id, existing), 0 }
  else
    fields = { 'h', j.handler, 'a', j.args, 'e', now }
    if j.priority ~= 0 then put('p', j.priority) end
    if j.deadline then put('d', j.deadline) end
    if j.drop then put('D', '1') end
    if j.timeout then put('t', j.timeout) end
    if j.attempts ~= 1 then put('m', j.attempts) end
    if j.backoff ~= '' then put('b', j.backoff) end
    if j.ttl and j.ttl ~= JOB_DEFAULT_RESULT_TTL_MS then put('T', j.ttl) end
    if string.sub(j.id, 1, 1) == '=' then
      put('k', string.sub(j.id, 2))
      -- The done list of an earlier job of this key would wake this job's waiters at once.
      redis.call('DEL', q.base .. 'done:' .. j.id)
    end
    local at = j.run_at or (j.delay and now + j.delay)
    local status = JOB_QUEUED
    if at and at > now then
      status = JOB_SCHEDULED
      put('r', at)
      local key_scheduled = q.base .. 'scheduled'
      redis.call('ZADD', key_scheduled, at, j.id)
      -- Idle workers sleep until the earliest scheduled job: only a new earliest one must
      -- wake them.
      if not scheduled and redis.call('ZRANGE', key_scheduled, 0, 0)[1] == j.id then
        scheduled = true
      end
    end
    put('s', status)
    redis.call('HSET', key, unpack(fields))
    if status == JOB_QUEUED then
      woke = true
      if j.deadline then
        job_push_ready(q, j.id, j.priority, j.deadline, false)
      else
        -- Plain jobs join their lane in one push per lane and call.
        local lane = ready[j.priority]
        if not lane then
          lane = {}
          ready[j.priority] = lane
        end
        lane[#lane + 1] = j.id
      end
    end
    answers[#answers + 1] = { status, 1 }
  end
end
for priority, ids in pairs(ready) do
  if redis.call('RPUSH', q.base .. 'ready:' .. priority, unpack(ids)) == #ids then
    local lane, rank = lane_of(priority, nil)
    redis.call('ZADD', q.lanes, rank, lane)
  end
end
if woke or scheduled then job_wake(q) end
return answers
