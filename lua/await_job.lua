-- await_job: the first step of waiting for a job's result (rule J9): answers the record of
-- an ended job, or marks the job as awaited (the partition's set "<base>waiting"), so that
-- whatever ends it pushes to "<base>done:<id>", the list the caller then blocks on.
-- KEYS[1] the job's hash ("<base>job:<id>")
-- ARGV[1] job id
-- Returns: the record (as get_job) when the job has ended, its status letter when it has
--          not, or an empty list when there is no such job
-- Errors: DTQ_INVALID_ARGUMENT

local id = arg_id(ARGV[1], 'job id')
local q = job_call_keys(KEYS, id)
local status = redis.call('HGET', KEYS[1], 's')
if not status then return {} end
if status == JOB_SCHEDULED or status == JOB_QUEUED then
  redis.call('SADD', q.base .. 'waiting', id)
  return job_status(q, id, status)
end
return redis.call('HGETALL', KEYS[1])
