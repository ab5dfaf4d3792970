-- record_ack: records a node's prepare or post ack (rules 16-19). The first ack per (task,
-- node, phase) wins; acks from nodes that own no unit, and acks that arrive after their phase,
-- are dropped. A failed ack fails the task; the last successful prepare ack moves the task to
-- SWAPPING.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] node id   ARGV[4] phase ("prepare" | "post")
-- ARGV[5] success (0 | 1)   ARGV[6] error text
-- ARGV[7] request id (the same for every retry of a call): a retry after a lost reply
--         answers 1 again when its first try recorded the ack
-- Events: acked (when recorded), status (FAILED on a failed ack; SWAPPING after the last
--         prepare ack)
-- Returns: 1 when the ack was recorded, 0 when it was dropped
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local node = arg_id(ARGV[3], 'node id')
local phase = ARGV[4]
if phase ~= 'prepare' and phase ~= 'post' then fail('INVALID_ARGUMENT', 'phase must be "prepare" or "post"') end
local success = arg_int(ARGV[5], 'success', 0, 1)
local message = ARGV[6]
if message == nil or #message > 65536 then fail('INVALID_ARGUMENT', 'error text must be at most 64 KiB') end
local request_id = arg_id(ARGV[7], 'request id')

local t = require_task(task_keys(KEYS, task_id), task_id, version)
local ack_field = phase .. ':' .. node
local recorded = redis.call('HGET', t.keys.acks, ack_field)
if recorded then return cmsgpack.unpack(recorded)[4] == request_id and 1 or 0 end
-- Acks count in their own phase and, recorded early, in the phases before it.
local applies = t.status == 'STARTED' or t.status == 'PREPARING' or (t.status == 'SWAPPING' and phase == 'post')
if not applies then return 0 end
if redis.call('HEXISTS', t.keys.nodes, node) == 0 then return 0 end

local now = now_ms()
redis.call('HSET', t.keys.acks, ack_field, cmsgpack.pack({ success, message, now, request_id }))
emit(t.keys, 'acked', task_id, t.version, 'node', node, 'phase', phase, 'success', success)
if success == 0 then
  local what = phase == 'prepare' and 'prepare' or 'post-completion'
  finish_task(t, 'FAILED', what .. ' failed on node ' .. node .. ': ' .. message, now)
elseif t.status == 'PREPARING' and phase == 'prepare' and #missing_acks(t, 'prepare') == 0 then
  advance(t, now)
end
return 1
