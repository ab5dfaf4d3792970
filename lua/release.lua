-- release: a node gives back its claims on units of one partition at once, so that they need
-- not wait for their leases (a worker shutting down after its grace period). Each lease held
-- by that node under that token, on a STARTED task, ends now exactly as an expiry would
-- (rule 25): a reassign unit goes back to PENDING and unassigned, a sticky one is kept for its
-- node; a range unit waits to be claimed again and the span its holder was continuing becomes
-- fresh. Idempotent: a retry finds nothing held and releases nothing.
-- KEYS[1] the partition's lease index ("<base>leases"); the tasks' keys and the event stream
--         are derived from it
-- ARGV[1] node id, then quads (task id, version, unit id, token) -- four values per claim
-- Events: returned (one per task and node the released units are now kept for, "" for any)
-- Returns: one integer per claim: 1 released, 0 not held (lost, expired, terminal, task not
--          running, unknown task, version or unit)
-- Errors: DTQ_INVALID_ARGUMENT

local node = claim_list_args(ARGV)

local now = now_ms()
local answers = {}
for i = 2, #ARGV, 4 do
  local unit_id, token = ARGV[i + 2], tonumber(ARGV[i + 3])
  local t = load_task(partition_task_keys(KEYS[1], 'leases', ARGV[i]), ARGV[i], ARGV[i + 1])
  local answer = 0
  if t and t.status == 'STARTED' then
    local raw = redis.call('HGET', t.keys.units, unit_id)
    local u = raw and cmsgpack.unpack(raw)
    -- An expired lease is no longer held (heartbeat says LOST): the sweep, or the next claim,
    -- ends it as it ends any other.
    if u and u[U_STATUS] == IN_PROGRESS and u[U_LEASE] > now and u[U_NODE] == node and u[U_ATTEMPT] == token then
      -- Seen as expiring now, the unit goes through the very steps of an expiry.
      local ending = copy(u)
      ending[U_LEASE] = now
      save_unit(t, unit_id, ending, effective(t, ending, now), now)
      answer = 1
    end
  end
  answers[#answers + 1] = answer
end
return answers
