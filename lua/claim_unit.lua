-- claim_unit: the first claimer of an unassigned unit owns it (rule 6); the holder gets its
-- current token back and its lease renewed. An expired lease is honoured here (rule 25).
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] unit id   ARGV[4] node id
-- Events: claimed (when the node becomes an owner of the task)
-- Returns: the token (the unit's attempt number)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING,
--         DTQ_UNIT_ALREADY_TERMINAL, DTQ_UNIT_WRONG_NODE, DTQ_UNIT_NOT_READY

local task_id, version, unit_id, node = unit_call_args(ARGV)
local t = require_task(task_keys(KEYS, task_id), task_id, version)
local now = now_ms()
local stored = require_unit(t, unit_id)
return hold(t, unit_id, stored, claim_for_report(t, unit_id, stored, node, nil, now), now)
