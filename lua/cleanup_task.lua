-- cleanup_task: deletes every key of a terminal task version older than its TTL (rule 22).
-- It leaves a one-minute tombstone so that a retry of the same call (same request id) after
-- a lost reply succeeds instead of finding the task gone.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] request id (the same for every retry of a call)
-- Events: removed
-- Returns: 1
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST, DTQ_TASK_STILL_RUNNING,
--         DTQ_TASK_TOO_FRESH

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local request_id = arg_id(ARGV[3], 'request id')
local keys = task_keys(KEYS, task_id)
local done = version .. ' ' .. request_id
if redis.call('GET', keys.cleaned) == done then return 1 end
local t = require_task(keys, task_id, version)
if ACTIVE[t.status] then fail('TASK_STILL_RUNNING', 'task ' .. task_id .. ' is ' .. t.status) end
local age = now_ms() - t.finished_at
if age <= t.ttl_ms then
  fail('TASK_TOO_FRESH', 'task ' .. task_id .. ' finished ' .. age .. ' ms ago, TTL is ' .. t.ttl_ms .. ' ms')
end
delete_task_data(keys, task_id)
redis.call('ZREM', keys.index, task_id)
redis.call('ZREM', keys.expiry, task_id)
redis.call('SET', keys.cleaned, done, 'PX', 60000)
emit(keys, 'removed', task_id, t.version)
return 1
