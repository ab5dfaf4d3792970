-- cancel_job: cancels a job that has not ended (rule J10): a scheduled or queued job leaves
-- its set or lane at once; a running one loses its claim, its node learns of it through its
-- next heartbeat, and its report is turned away.
-- KEYS[1] the job's hash ("<base>job:<id>"); the partition's keys are derived from it
-- ARGV[1] job id
-- Returns: the status letter the job had (S, Q, R, C, F or X; only S, Q and R change), or
--          false when there is no such job
-- Errors: DTQ_INVALID_ARGUMENT

local id = arg_id(ARGV[1], 'job id')
local q = job_call_keys(KEYS, id)
local key = KEYS[1]
local f = redis.call('HMGET', key, 's', 'p', 'd', 'T')
local status = f[1]
local claim = status == JOB_QUEUED and job_claim_of(redis.call('HGET', q.running, id))
if status == JOB_SCHEDULED then
  redis.call('ZREM', q.base .. 'scheduled', id)
elseif claim then
  status = JOB_RUNNING
  job_drop_claims(q, claim.node, { id })
  redis.call('HSET', key, 'c', claim.entry)
elseif status == JOB_QUEUED then
  job_leave_lane(q, id, tonumber(f[2] or '0'), opt_num(f[3]))
else
  return status
end
redis.call('HSET', key, 's', JOB_CANCELLED, 'F', now_ms())
job_finish(q, id, job_result_ttl(f[4]))
return status
