-- claim_unit: the first claimer of an unassigned unit owns it (rule 6); the holder gets its
-- current token back and its lease renewed. An expired lease is honoured here (rule 25).
-- KEYS[1] task hash         KEYS[2] units hash       KEYS[3] acks hash
-- KEYS[4] node counts hash  KEYS[5] lease index      KEYS[6] expiry index
-- KEYS[7] conflict holders  KEYS[8] task index       KEYS[9] version counter
-- KEYS[10] spans            KEYS[11] span order      KEYS[12] returned units
-- KEYS[13] kept units       KEYS[14] completion bitmaps  KEYS[15] event stream
-- ARGV[1] task id   ARGV[2] version   ARGV[3] unit id   ARGV[4] node id
-- Events: claimed (when the node becomes an owner of the task)
-- Returns: the token (the unit's attempt number)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING,
--         DTQ_UNIT_ALREADY_TERMINAL, DTQ_UNIT_WRONG_NODE, DTQ_UNIT_NOT_READY
-- @include common

local task_id, version, unit_id, node = unit_call_args()
local t = require_task(call_keys(), task_id, version)
local now = now_ms()
local stored = require_unit(t, unit_id)
return hold(t, unit_id, stored, claim_for_report(t, unit_id, stored, node, nil, now), now)
