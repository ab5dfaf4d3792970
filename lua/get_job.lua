-- get_job: reads a job's record (docs/jobs.md lists its fields).
-- KEYS[1] the job's hash ("<base>job:<id>")
-- ARGV[1] job id
-- Returns: the record as a flat list of field names and values, with "L" (the ms its lease
--          or its schedule has left, for a running or scheduled job) added; empty when there
--          is no such job
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes

local id = arg_id(ARGV[1], 'job id')
local q = job_call_keys(KEYS, id)
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then return record end
local status
for i = 1, #record, 2 do
  if record[i] == 's' then status = record[i + 1] end
end
local at
if status == JOB_RUNNING then
  at = redis.call('ZSCORE', q.leases, id)
elseif status == JOB_SCHEDULED then
  at = redis.call('ZSCORE', q.scheduled, id)
end
if at then
  record[#record + 1] = 'L'
  record[#record + 1] = math.max(0, tonumber(at) - now_ms())
end
return record
