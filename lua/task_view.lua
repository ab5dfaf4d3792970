-- task_view: what one node's scheduler needs to know of a task, in one snapshot whose cost
-- grows with the number of groups that node has units in, not with the task: its fields (not
-- the payload), acks, owning nodes, the groups the node owns units of with how many of their
-- units are not complete yet, and whether the node could be handed a unit.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] node id
-- Returns: {} when there is no such task, else {fields, acks, nodes, groups, claimable}:
--          fields the values of VIEW_FIELDS (lua/include/views.lua) in order; acks and nodes
--          flat HGETALL arrays as in get_task; groups flat (group, units not yet complete)
--          pairs of the named-unit groups the node owns units of; claimable 1 or 0
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)

local task_id = arg_id(ARGV[1], 'task id')
local node = arg_id(ARGV[2], 'node id')
local t = load_task(task_keys(KEYS, task_id), task_id, '')
if not t then return {} end
return {
  redis.call('HMGET', t.keys.task, unpack(VIEW_FIELDS)), redis.call('HGETALL', t.keys.acks),
  redis.call('HGETALL', t.keys.nodes), node_groups(t, node), claimable(t, node, now_ms()) and 1 or 0,
}
