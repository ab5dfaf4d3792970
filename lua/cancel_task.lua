-- cancel_task: STARTED -> CANCELLED (rule 21). A retry of the same call (same request id)
-- after a lost reply succeeds unchanged.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] request id (the same for every retry of a call)
-- Events: status (CANCELLED)
-- Returns: 1
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_NOT_RUNNING

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local request_id = arg_id(ARGV[3], 'request id')
local t = require_task(task_keys(KEYS, task_id), task_id, version)
if t.status == 'CANCELLED' and redis.call('HGET', t.keys.task, 'cancel_request') == request_id then
  return 1
end
require_running(t)
finish_task(t, 'CANCELLED', 'cancelled', now_ms())
redis.call('HSET', t.keys.task, 'cancel_request', request_id)
return 1
