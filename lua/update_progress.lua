-- update_progress: records monotonic progress for a unit (rules 6-11); the first report on
-- an unassigned unit claims it. A report renews the reporter's lease.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] unit id   ARGV[4] node id
-- ARGV[5] progress (finite, in [0, 1])   ARGV[6] token ("" = check the node only)
-- Events: claimed (when the report claims the node's first unit of the task)
-- Returns: the token, or 0 when the unit is already terminal (the report is ignored)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING,
--         DTQ_UNIT_WRONG_NODE, DTQ_LEASE_LOST, DTQ_UNIT_NOT_READY

local progress = tonumber(ARGV[5])
if progress == nil or progress ~= progress or progress < 0 or progress > 1 then
  fail('INVALID_ARGUMENT', 'progress must be a finite number in [0, 1]')
end
local task_id, version, unit_id, node = unit_call_args(ARGV)
local token = arg_token(ARGV[6])

local t = require_task(task_keys(KEYS, task_id), task_id, version)
require_running(t)
local now = now_ms()
local stored = require_unit(t, unit_id)
if stored[U_STATUS] == COMPLETED or stored[U_STATUS] == FAILED then return 0 end
local u = copy(check_claim(t, unit_id, effective(t, stored, now), node, token, now))
u[U_PROGRESS] = math.max(u[U_PROGRESS], progress)
u[U_UPDATED] = now
u[U_LEASE] = now + t.lease_ms
save_unit(t, unit_id, stored, u, now)
return u[U_ATTEMPT]
