-- finalize_task: SWAPPING with every expected post ack successful -> FINISHED (rule 20).
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] request id (the same for every retry of a call)
-- Events: status (FINISHED)
-- Returns: 1 when this call finished the task, 0 when it was already FINISHED
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_FINALIZING,
--         DTQ_ACKS_MISSING (the message ends with the missing nodes, space separated)

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local request_id = arg_id(ARGV[3], 'request id')
local t = require_task(task_keys(KEYS, task_id), task_id, version)
if t.status == 'FINISHED' then
  return redis.call('HGET', t.keys.task, 'finalize_request') == request_id and 1 or 0
end
if t.status ~= 'SWAPPING' then fail('TASK_NOT_FINALIZING', 'task ' .. task_id .. ' is ' .. t.status) end
local missing = missing_acks(t, 'post')
if #missing > 0 then fail('ACKS_MISSING', 'post acks missing from: ' .. table.concat(missing, ' ')) end
finish_task(t, 'FINISHED', '', now_ms())
redis.call('HSET', t.keys.task, 'finalize_request', request_id)
return 1
