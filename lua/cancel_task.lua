-- cancel_task: STARTED -> CANCELLED (rule 21).
-- KEYS[1..9] as add_task: task, units, acks, nodes, leases, expiry, conflicts, index, seq
-- ARGV[1] task id   ARGV[2] version
-- Returns: 1
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING
-- @include common

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local t = require_task(call_keys(), task_id, version)
require_running(t)
finish_task(t, 'CANCELLED', 'cancelled', now_ms())
return 1
