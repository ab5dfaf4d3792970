-- task_view: what one node's scheduler needs to know of a task, in one snapshot whose cost
-- grows with that node's units, not with the task: its fields (not the payload), acks, owning
-- nodes, the named units the node owns with the counters of their groups, and whether the
-- node could be handed a unit.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] node id
-- Returns: {} when there is no such task, else {fields, acks, nodes, units, groups,
--          claimable}: fields the values of VIEW_FIELDS (lua/include/views.lua) in order;
--          acks and nodes flat HGETALL arrays as in get_task; units flat (unit id, msgpack
--          record) pairs of the node's named units; groups flat (group, units not yet
--          complete) pairs of those units' groups; claimable 1 or 0
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)

local task_id = arg_id(ARGV[1], 'task id')
local node = arg_id(ARGV[2], 'node id')
local t = load_task(task_keys(KEYS, task_id), task_id, '')
if not t then return {} end
local units, groups, seen = {}, {}, {}
if t.unit_count == 0 then
  local ids = owned_units(t, node)
  for i = 1, #ids, 1000 do
    local slice = { unpack(ids, i, math.min(i + 999, #ids)) }
    local records = redis.call('HMGET', t.keys.units, unpack(slice))
    for j, unit_id in ipairs(slice) do
      units[#units + 1] = unit_id
      units[#units + 1] = records[j]
      local group = cmsgpack.unpack(records[j])[U_GROUP]
      if not seen[group] then
        seen[group] = true
        groups[#groups + 1] = group
        groups[#groups + 1] = redis.call('HGET', t.keys.task, 'group:' .. group) or '0'
      end
    end
  end
end
return {
  redis.call('HMGET', t.keys.task, unpack(VIEW_FIELDS)), redis.call('HGETALL', t.keys.acks),
  redis.call('HGETALL', t.keys.nodes), units, groups, claimable(t, node, now_ms()) and 1 or 0,
}
