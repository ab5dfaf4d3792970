-- finalize_task: SWAPPING with every expected post ack successful -> FINISHED (rule 20).
-- KEYS[1] task hash         KEYS[2] units hash       KEYS[3] acks hash
-- KEYS[4] node counts hash  KEYS[5] lease index      KEYS[6] expiry index
-- KEYS[7] conflict holders  KEYS[8] task index       KEYS[9] version counter
-- KEYS[10] spans            KEYS[11] span order      KEYS[12] returned units
-- KEYS[13] kept units       KEYS[14] completion bitmaps  KEYS[15] event stream
-- ARGV[1] task id   ARGV[2] version   ARGV[3] request id (the same for every retry of a call)
-- Events: status (FINISHED)
-- Returns: 1 when this call finished the task, 0 when it was already FINISHED
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_FINALIZING,
--         DTQ_ACKS_MISSING (the message ends with the missing nodes, space separated)
-- @include common

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local request_id = arg_id(ARGV[3], 'request id')
local t = require_task(call_keys(), task_id, version)
if t.status == 'FINISHED' then
  return redis.call('HGET', t.keys.task, 'finalize_request') == request_id and 1 or 0
end
if t.status ~= 'SWAPPING' then fail('TASK_NOT_FINALIZING', 'task ' .. task_id .. ' is ' .. t.status) end
local missing = missing_acks(t, 'post')
if #missing > 0 then fail('ACKS_MISSING', 'post acks missing from: ' .. table.concat(missing, ' ')) end
finish_task(t, 'FINISHED', '', now_ms())
redis.call('HSET', t.keys.task, 'finalize_request', request_id)
return 1
