-- What a node's scheduler reads about a task: enough to decide what to run and which callbacks
-- are due, in time that grows with the node's own units, never with the task.
-- @requires units

-- The task fields a view carries, in this order (not the payload: it may be large).
local VIEW_FIELDS = {
  'version', 'status', 'error', 'started_at', 'finished_at', 'units_finished_at', 'lease_ms',
  'on_lease_expiry', 'max_attempts', 'retry_backoff_ms', 'completed_ttl_ms', 'barrier',
  'units_total', 'units_completed', 'unit_count', 'conflict_keys',
}

-- True when `node` may be handed a unit of task `t` now or later: the task runs and a unit
-- waits unassigned, or is kept for `node`, or (range tasks) still lies in a span.
-- How many expired leases a read looks through for one of the task's: the claims and the
-- sweeper end them soon after they expire, so few wait at any time.
local EXPIRED_LOOKED_AT = 100

local function claimable(t, node, now)
  if t.status ~= 'STARTED' then return false end
  if redis.call('ZCARD', t.keys.returned) > 0 then return true end
  local fresh = t.unit_count > 0 and t.keys.order or t.keys.pending
  if redis.call('ZCARD', fresh) > 0 then return true end
  local kept = redis.call('ZRANGE', t.keys.kept, '[' .. node .. '\n', '(' .. node .. '\011',
    'BYLEX', 'LIMIT', 0, 1)
  if #kept > 0 then return true end
  -- A unit whose lease ran out is free by rule 25 even before a write ends the lease.
  local expired = redis.call('ZRANGE', t.keys.leases, '-inf', now, 'BYSCORE', 'LIMIT', 0,
    EXPIRED_LOOKED_AT)
  local mine = t.id .. '\n'
  for _, member in ipairs(expired) do
    if string.sub(member, 1, #mine) == mine then return true end
  end
  return false
end

-- The groups of named units in which `node` owns units, as flat (group, units of the group
-- not complete yet) pairs: one entry a group, however many units.
local function node_groups(t, node)
  local mine = redis.call('ZRANGE', t.keys.groups, '[' .. node .. '\n', '(' .. node .. '\011', 'BYLEX')
  local found = {}
  for _, member in ipairs(mine) do
    local group = string.sub(member, #node + 2)
    found[#found + 1] = group
    found[#found + 1] = redis.call('HGET', t.keys.task, 'group:' .. group) or '0'
  end
  return found
end
