-- heartbeat_jobs: renews a node's lease on its claims in one queue partition, and tells it
-- which of its jobs are no longer its own (rule J5).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id
-- ARGV[2] lease ms (1..86400000): the node's claims here last until now + this
-- ARGV[3..] pairs (job id, token), one per job the node runs
-- Returns: one integer per job: 0 held, 1 lost (the claim is no longer this node's: its lease
--          ran out and the job went back), 2 cancelled (the handler should stop; its report
--          will be turned away)
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = job_claim_args(ARGV, 3)
local lease = arg_int(ARGV[2], 'lease ms', 1, 86400000)
local now = now_ms()
local ids = {}
for i = 3, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local answers = {}
if #ids == 0 then return answers end
local entries = redis.call('HMGET', q.running, unpack(ids))
local held = false
for n, id in ipairs(ids) do
  local claim = job_claim_of(entries[n])
  if claim and claim.node == node and claim.token == tonumber(ARGV[2 * n + 2]) then
    answers[n] = 0
    held = true
  elseif redis.call('HGET', job_key(q, id), 's') == JOB_CANCELLED then
    answers[n] = 2
  else
    answers[n] = 1
  end
end
if held then redis.call('ZADD', q.base .. 'nodes', now + lease, node) end
return answers
