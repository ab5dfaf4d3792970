-- fail_unit: reports a unit failure. A retryable failure with attempts left returns the unit
-- to PENDING after a backoff (rule 14); otherwise the unit and the whole task fail at once
-- (rule 13). An identical retry of a failure report succeeds unchanged.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] unit id   ARGV[4] node id
-- ARGV[5] token ("" = check the node only)   ARGV[6] error text   ARGV[7] retryable (0 | 1)
-- Events: claimed (when the reporter becomes an owner), returned (a held unit goes back to
--         PENDING for a retry), status (FAILED)
-- Returns: 1 when the unit will be retried, 0 when it failed for good
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING,
--         DTQ_UNIT_ALREADY_TERMINAL, DTQ_UNIT_WRONG_NODE, DTQ_LEASE_LOST, DTQ_UNIT_NOT_READY

local task_id, version, unit_id, node = unit_call_args(ARGV)
local token = arg_token(ARGV[5])
local message = ARGV[6]
if message == nil or #message > 65536 then fail('INVALID_ARGUMENT', 'error text must be at most 64 KiB') end
local retryable = arg_int(ARGV[7], 'retryable', 0, 1) == 1

local t = require_task(task_keys(KEYS, task_id), task_id, version)
local stored = require_unit(t, unit_id)
local same_token = token == nil or token == stored[U_ATTEMPT]
if stored[U_STATUS] == FAILED and stored[U_NODE] == node and same_token then return 0 end
if retryable and stored[U_STATUS] == PENDING and token ~= nil and same_token
    and stored[U_ERROR] == message and stored[U_READY] > 0 then
  return 1
end
local now = now_ms()
local u = claim_for_report(t, unit_id, stored, node, token, now)
u[U_ERROR] = message
u[U_UPDATED] = now
u[U_LEASE] = 0
if retryable and u[U_ATTEMPT] < t.max_attempts then
  u[U_STATUS] = PENDING
  if not t.sticky then u[U_NODE] = '' end
  -- Exponential backoff, capped at an hour; at least 1 ms so a retry can recognise itself.
  u[U_READY] = now + math.max(1, math.floor(math.min(t.retry_backoff_ms * 2 ^ (u[U_ATTEMPT] - 1), 3600000)))
  save_unit(t, unit_id, stored, u, now)
  return 1
end
u[U_STATUS] = FAILED
u[U_FINISHED] = now
save_unit(t, unit_id, stored, u, now)
if t.units_completed == t.units_total - 1 then units_finished(t, now) end
finish_task(t, 'FAILED', 'unit ' .. unit_id .. ' failed: ' .. message, now)
return 0
