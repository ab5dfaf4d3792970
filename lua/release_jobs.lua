-- release_jobs: hands jobs a node claimed but will not run back to their lanes, at the
-- front, without counting an attempt (rule J7: a stopping worker).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id, then pairs (job id, token)
-- Returns: per job 1 when released, 0 when the claim was no longer the node's
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = job_claim_args(ARGV)
local answers, released = {}, false
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local key = job_key(q, id)
  local f = redis.call('HMGET', key, 's', 'n', 'w', 'p', 'd')
  local answer = 0
  if f[1] == JOB_RUNNING and f[2] == ARGV[i + 1] and f[3] == node then
    redis.call('ZREM', q.leases, id)
    redis.call('HSET', key, 's', JOB_QUEUED)
    job_push_ready(q, id, tonumber(f[4] or '0'), opt_num(f[5]), true)
    answer = 1
    released = true
  end
  answers[#answers + 1] = answer
end
if released then job_wake(q) end
return answers
