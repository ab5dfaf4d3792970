-- Arguments of the operations that report on units.
-- @requires args

-- ARGV[1..4] of the unit operations: task id, version, unit id, node id.
local function unit_call_args(ARGV)
  return arg_id(ARGV[1], 'task id'), arg_id(ARGV[2], 'version'), arg_id(ARGV[3], 'unit id'),
    arg_id(ARGV[4], 'node id')
end

-- ARGV of the operations that act on a node's claims across a partition (heartbeat,
-- release): the node id, then quads (task id, version, unit id, token). Returns the node id.
local function claim_list_args(ARGV)
  local node = arg_id(ARGV[1], 'node id')
  if (#ARGV - 1) % 4 ~= 0 then fail('INVALID_ARGUMENT', 'claims come as (task id, version, unit id, token)') end
  for i = 2, #ARGV, 4 do
    arg_id(ARGV[i], 'task id')
    arg_id(ARGV[i + 1], 'version')
    arg_id(ARGV[i + 2], 'unit id')
    arg_int(ARGV[i + 3], 'token', 0, 9007199254740992)
  end
  return node
end
