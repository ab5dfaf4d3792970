-- complete_unit: marks a unit COMPLETED (rule 12); completing the last unit moves the task on
-- (FINISHED, or into its barrier). Completing an unassigned unit claims it first. An identical
-- retry (same node, same token) of a completion that already happened succeeds unchanged.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] unit id   ARGV[4] node id
-- ARGV[5] token ("" = check the node only)
-- Events: claimed (when the reporter becomes an owner), group (the unit was the last of its
--         group to complete; named units only), status (the task moved on)
-- Returns: the token under which the unit completed
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING,
--         DTQ_UNIT_ALREADY_TERMINAL, DTQ_UNIT_WRONG_NODE, DTQ_LEASE_LOST, DTQ_UNIT_NOT_READY

local task_id, version, unit_id, node = unit_call_args(ARGV)
local token = arg_token(ARGV[5])

local t = require_task(task_keys(KEYS, task_id), task_id, version)
return complete_one(t, unit_id, node, token, now_ms())
