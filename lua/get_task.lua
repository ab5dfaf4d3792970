-- get_task: reads the current version of a task, its units, acks and owning nodes in one
-- snapshot.
-- KEYS[1] task hash         KEYS[2] units hash       KEYS[3] acks hash
-- KEYS[4] node counts hash  KEYS[5] lease index      KEYS[6] expiry index
-- KEYS[7] conflict holders  KEYS[8] task index       KEYS[9] version counter
-- KEYS[10] spans            KEYS[11] span order      KEYS[12] returned units
-- KEYS[13] kept units       KEYS[14] completion bitmaps  KEYS[15] event stream
-- ARGV[1] task id
-- Returns: {} when there is no such task, else {task fields, unit fields, ack fields, node
--          counts}, each a flat HGETALL array; unit and ack values are msgpack arrays, node
--          counts the number of units each node owns (the expected ack set, rule 16)
-- Errors: DTQ_INVALID_ARGUMENT
-- @include common

arg_id(ARGV[1], 'task id')
local keys = call_keys()
local task = redis.call('HGETALL', keys.task)
if #task == 0 then return {} end
return {
  task, redis.call('HGETALL', keys.units), redis.call('HGETALL', keys.acks),
  redis.call('HGETALL', keys.nodes),
}
