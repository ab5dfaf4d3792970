-- get_task: reads the current version of a task, its units, acks and owning nodes in one
-- snapshot.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id
-- Returns: {} when there is no such task, else {task fields, unit fields, ack fields, node
--          counts}, each a flat HGETALL array; unit and ack values are msgpack arrays, node
--          counts the number of units each node owns (the expected ack set, rule 16)
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)
-- Errors: DTQ_INVALID_ARGUMENT

local keys = task_keys(KEYS, arg_id(ARGV[1], 'task id'))
local task = redis.call('HGETALL', keys.task)
if #task == 0 then return {} end
return {
  task, redis.call('HGETALL', keys.units), redis.call('HGETALL', keys.acks),
  redis.call('HGETALL', keys.nodes),
}
