-- enqueue_jobs: adds jobs to one queue partition (rules J1-J3, docs/jobs.md).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV: one record of 12 values per job: id, handler, arguments (msgpack), priority
--       (-1000..1000), delay ms ("" for none), run-at ms since the epoch (""), deadline ms
--       since the epoch (""), "1" to drop the job at its deadline (else "0"), timeout ms (""),
--       max attempts, backoff "<first ms>,<max ms>" (""), result ttl ms ("")
--       An id "=<key>" is the id of idempotency key <key>.
-- Returns: per job, {status, created}: the status letter of the job with that id (S, Q, R,
--          C, F or X) and 1 when this call created it, 0 when it was there already (the same
--          id enqueued before: an idempotency key that is held, or a retried call)
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local FIELDS = 12
if #ARGV == 0 or #ARGV % FIELDS ~= 0 then
  fail('INVALID_ARGUMENT', 'enqueue takes records of ' .. FIELDS .. ' values')
end
local MAX = 9007199254740992
local function opt_int(value, name, min)
  if value == '' then return nil end
  return arg_int(value, name, min, MAX)
end
local jobs = {}
for i = 1, #ARGV, FIELDS do
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
local answers, ready, scheduled = {}, false, false
local fields
local function put(name, value) fields[#fields + 1] = name; fields[#fields + 1] = value end
for _, j in ipairs(jobs) do
  local key = job_key(q, j.id)
  local existing = redis.call('HGET', key, 's')
  if existing then
    answers[#answers + 1] = { existing, 0 }
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
      -- The key's previous job may have left its end marker (kept at least 1 s, rule J9);
      -- found there, it would wake the new job's waiters at once, again and again.
      redis.call('DEL', q.base .. 'done:' .. j.id)
    end
    local at = j.run_at or (j.delay and now + j.delay)
    local status = JOB_QUEUED
    if at and at > now then
      status = JOB_SCHEDULED
      put('r', at)
      redis.call('ZADD', q.scheduled, at, j.id)
      scheduled = true
    end
    put('s', status)
    redis.call('HSET', key, unpack(fields))
    if status == JOB_QUEUED then
      job_push_ready(q, j.id, j.priority, j.deadline, false)
      ready = true
    end
    answers[#answers + 1] = { status, 1 }
  end
end
-- An idle worker sleeps until the earliest scheduled job; a new earlier one must wake it.
if ready or scheduled then job_wake(q) end
return answers
