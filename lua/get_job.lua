-- get_job: reads a job's record (docs/jobs.md lists its fields).
-- KEYS[1] the job's hash ("<base>job:<id>")
-- ARGV[1] job id
-- Returns: the record as a flat list of field names and values, with "L" (when its lease
--          ends, in server ms) added for a running job; empty when there is no such job
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes

local id = arg_id(ARGV[1], 'job id')
local q = job_call_keys(KEYS, id)
local record = redis.call('HGETALL', KEYS[1])
if #record == 0 then return record end
-- A running job's lease end lives in the lease index, not in the record.
for i = 1, #record, 2 do
  if record[i] == 's' and record[i + 1] == JOB_RUNNING then
    record[#record + 1] = 'L'
    record[#record + 1] = redis.call('ZSCORE', q.leases, id) or '0'
    break
  end
end
return record
