-- heartbeat_jobs: renews the leases of jobs a node runs in one queue partition (rule J5).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id, then pairs (job id, token), one per running job
-- Returns: one integer per job: 0 held (lease renewed), 1 lost (the claim is no longer this
--          node's), 2 cancelled (the handler should stop; its report will be turned away)
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = job_claim_args(ARGV)
local now = now_ms()
local answers = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local f = redis.call('HMGET', job_key(q, id), 's', 'n', 'w', 't')
  local answer = 1
  if f[1] == JOB_RUNNING and f[2] == ARGV[i + 1] and f[3] == node then
    redis.call('ZADD', q.leases, now + job_lease_ms(opt_num(f[4])), id)
    answer = 0
  elseif f[1] == JOB_CANCELLED and f[2] == ARGV[i + 1] and f[3] == node then
    answer = 2
  end
  answers[#answers + 1] = answer
end
return answers
