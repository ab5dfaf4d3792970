-- release_jobs: hands jobs a node claimed but will not run back to their lanes, at the
-- front, without counting an attempt (rule J7: a stopping worker).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id, then pairs (job id, token)
-- Returns: per job 1 when released, 0 when the claim was no longer the node's
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = job_claim_args(ARGV, 2)
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local answers, released = {}, {}
if #ids == 0 then return answers end
local entries = redis.call('HMGET', q.running, unpack(ids))
for n, id in ipairs(ids) do
  local claim = job_claim_of(entries[n])
  if claim and claim.node == node and claim.token == tonumber(ARGV[2 * n + 1]) then
    answers[n] = 1
    released[#released + 1] = id
  else
    answers[n] = 0
  end
end
job_drop_claims(q, node, released)
for _, id in ipairs(released) do
  local f = redis.call('HMGET', job_key(q, id), 'p', 'd')
  job_push_ready(q, id, tonumber(f[1] or '0'), opt_num(f[2]), true)
end
if #released > 0 then job_wake(q) end
return answers
