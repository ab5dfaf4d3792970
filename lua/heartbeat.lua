-- heartbeat: renews a node's leases on units of one partition (rule 24).
-- KEYS[1] the partition's lease index ("<base>leases"); the tasks' keys are derived from it
-- ARGV[1] node id, then quads (task id, version, unit id, token), one per claim
-- Events: none (a renewed lease changes no owner and no status, so this needs no stream key)
-- Returns: one integer per claim: 0 held (lease renewed), 1 lost, 2 task no longer running
-- Errors: DTQ_INVALID_ARGUMENT

local node = claim_list_args(ARGV)

local HELD, LOST, NOT_RUNNING = 0, 1, 2
local now = now_ms()
local answers = {}
for i = 2, #ARGV, 4 do
  local unit_id, token = ARGV[i + 2], tonumber(ARGV[i + 3])
  local t = load_task(partition_task_keys(KEYS[1], 'leases', ARGV[i]), ARGV[i], ARGV[i + 1])
  local answer = NOT_RUNNING
  if t and t.status == 'STARTED' then
    answer = LOST
    local raw = redis.call('HGET', t.keys.units, unit_id)
    local u = raw and cmsgpack.unpack(raw)
    if u and u[U_STATUS] == IN_PROGRESS and u[U_LEASE] > now and u[U_NODE] == node and u[U_ATTEMPT] == token then
      local renewed = copy(u)
      renewed[U_LEASE] = now + t.lease_ms
      save_unit(t, unit_id, u, renewed, now)
      answer = HELD
    end
  end
  answers[#answers + 1] = answer
end
return answers
