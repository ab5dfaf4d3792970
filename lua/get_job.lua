-- get_job: reads a job's record (docs/jobs.md lists its fields).
-- KEYS[1] the job's hash ("<base>job:<id>")
-- ARGV[1] job id
-- Returns: the record as a flat list of field names and values; for a running job, "s" is
--          "R" and "c" its claim, with "L" added: when the node's lease on it ends (server
--          ms). Empty when there is no such job.
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes

local id = arg_id(ARGV[1], 'job id')
local q = job_call_keys(KEYS, id)
local record = redis.call('HGETALL', KEYS[1])
local status
for i = 1, #record, 2 do
  if record[i] == 's' then status = i + 1 end
end
local claim = status and record[status] == JOB_QUEUED
  and job_claim_of(redis.call('HGET', q.running, id))
if claim then
  record[status] = JOB_RUNNING
  local lease = redis.call('ZSCORE', q.base .. 'nodes', claim.node) or '0'
  for _, value in ipairs({ 'c', claim.entry, 'L', lease }) do record[#record + 1] = value end
end
return record
