-- Unit records: reading, claiming and saving them with every index that follows a unit.
-- @requires tasks

-- A stored unit. A range unit without a record is stood in for: complete (its bit is set;
-- the node that completed it is not kept, so it reads '') or unclaimed, with its span.
local function require_unit(t, unit_id)
  local n = t.unit_count > 0 and range_unit(t, unit_id)
  local raw = (t.unit_count == 0 or n) and redis.call('HGET', t.keys.units, unit_id)
  if raw then return cmsgpack.unpack(raw) end
  if not n then fail('TASK_DOES_NOT_EXIST', 'unit ' .. unit_id .. ' does not exist in task ' .. t.id) end
  if is_done(t, n) then return { COMPLETED, '', '', 1, 1, 0, 0, '', 0, 0 } end
  local span = span_containing(t, n)
  if not span then error('dtaskq: range unit ' .. unit_id .. ' of task ' .. t.id .. ' is lost') end
  local unclaimed = { PENDING, '', '', 0, 0, 0, 0, '', 0, 0 }
  unclaimed.span = span
  return unclaimed
end

-- True when `u` is complete by `node` under `token` (nil: any), so that a repeated completion
-- is an identical retry (rule 12).
local function completed_by(t, u, node, token)
  if u[U_STATUS] ~= COMPLETED or (token ~= nil and token ~= u[U_ATTEMPT]) then return false end
  if u[U_NODE] ~= '' then return u[U_NODE] == node end
  -- A range unit completed under its first claim keeps no record: a node that owns units of
  -- the task is taken to be retrying its own report.
  return redis.call('HEXISTS', t.keys.nodes, node) == 1
end

-- The unit as it stands at `now`: an expired lease has already ended (rule 25), in memory
-- only, so that a call that rejects afterwards still writes nothing.
local function effective(t, u, now)
  if u[U_STATUS] ~= IN_PROGRESS or u[U_LEASE] > now then return u end
  local e = copy(u)
  e[U_STATUS] = PENDING
  e[U_LEASE] = 0
  if not t.sticky then e[U_NODE] = '' end
  return e
end

-- Named units have indexes, so that claims and a node's reads need not scan the task:
--   pending   units never claimed -> their place in the task
--   returned  units claimed before that any node may claim again -> when they may be (as for
--             range units); `kept` holds sticky ones for their node
--   owned     "<node>\n<group>\n<unit>" of every unit a node owns, whatever its status (score
--             0), so that one node's units of one group are one range
--   groups    "<node>\n<group>" of every group a node owns units of (score 0: read by name)
local function place_named_unit(t, unit_id, old, new)
  local waited = old[U_STATUS] == PENDING
  local waits = new[U_STATUS] == PENDING
  if waited ~= waits or old[U_NODE] ~= new[U_NODE] or old[U_READY] ~= new[U_READY] then
    if waited and old[U_ATTEMPT] == 0 then
      redis.call('ZREM', t.keys.pending, unit_id)
    elseif waited then
      stop_waiting(t, unit_id, old, t.keys.returned)
    end
    if waits then start_waiting(t, unit_id, new, t.keys.returned) end
  end
  if old[U_NODE] ~= new[U_NODE] then
    local group = new[U_GROUP]
    if old[U_NODE] ~= '' then
      local mine = old[U_NODE] .. '\n' .. group
      redis.call('ZREM', t.keys.owned, mine .. '\n' .. unit_id)
      if redis.call('ZLEXCOUNT', t.keys.owned, '[' .. mine .. '\n', '(' .. mine .. '\011') == 0 then
        redis.call('ZREM', t.keys.groups, mine)
      end
    end
    if new[U_NODE] ~= '' then
      local mine = new[U_NODE] .. '\n' .. group
      redis.call('ZADD', t.keys.owned, 0, mine .. '\n' .. unit_id)
      redis.call('ZADD', t.keys.groups, 0, mine)
    end
  end
end

-- Writes a unit and keeps the lease index and the per-node ownership counts in step with it;
-- a range unit also moves between its span, the waiting sets and the completion bitmap.
local function save_unit(t, unit_id, old, new, now)
  local member = t.id .. '\n' .. unit_id
  if new[U_STATUS] == IN_PROGRESS then
    redis.call('ZADD', t.keys.leases, new[U_LEASE], member)
  elseif old[U_STATUS] == IN_PROGRESS then
    redis.call('ZREM', t.keys.leases, member)
  end
  if old[U_NODE] ~= new[U_NODE] then
    if old[U_NODE] ~= '' and redis.call('HINCRBY', t.keys.nodes, old[U_NODE], -1) <= 0 then
      redis.call('HDEL', t.keys.nodes, old[U_NODE])
    end
    -- Only a new owner is told: claims are the hot path, and a node that already owns a unit
    -- of the task already runs it.
    if new[U_NODE] ~= '' and redis.call('HINCRBY', t.keys.nodes, new[U_NODE], 1) == 1 then
      emit(t.keys, 'claimed', t.id, t.version, 'node', new[U_NODE])
    end
  end
  if old[U_STATUS] == IN_PROGRESS and new[U_STATUS] == PENDING then
    tell_returned(t, new[U_NODE])
  end
  if t.unit_count == 0 then
    place_named_unit(t, unit_id, old, new)
  elseif not place_range_unit(t, unit_id, old, new, now) then
    redis.call('HDEL', t.keys.units, unit_id)
    return
  end
  redis.call('HSET', t.keys.units, unit_id, cmsgpack.pack(new))
end

-- Saves `claimed`, unit `unit_id` as a claim has just taken it, with a fresh lease; returns
-- its token.
local function hold(t, unit_id, stored, claimed, now)
  claimed[U_LEASE] = now + t.lease_ms
  claimed[U_UPDATED] = now
  save_unit(t, unit_id, stored, claimed, now)
  return claimed[U_ATTEMPT]
end

-- Checks that `node` may report on `u` with `token` (rules 6-7). Returns the unit as it will
-- be after the report's claim: unchanged when already held, newly assigned when it was free.
local function check_claim(t, unit_id, u, node, token, now)
  if u[U_NODE] ~= '' and u[U_NODE] ~= node then
    fail('UNIT_WRONG_NODE', 'unit ' .. unit_id .. ' is owned by node ' .. u[U_NODE])
  end
  if u[U_STATUS] == IN_PROGRESS then
    if token ~= nil and token ~= u[U_ATTEMPT] then
      fail('LEASE_LOST', 'token ' .. token .. ' of unit ' .. unit_id .. ' is stale')
    end
    return u
  end
  if token ~= nil then
    fail('LEASE_LOST', 'token ' .. token .. ' of unit ' .. unit_id .. ' is stale')
  end
  if u[U_READY] > now then
    fail('UNIT_NOT_READY', 'unit ' .. unit_id .. ' is backing off for ' .. (u[U_READY] - now) .. ' ms')
  end
  local c = copy(u)
  c[U_STATUS] = IN_PROGRESS
  c[U_NODE] = node
  c[U_ATTEMPT] = u[U_ATTEMPT] + 1
  c[U_READY] = 0
  return c
end

-- The checks of a report that takes effect (claim, complete, fail): the task runs, the unit
-- is not terminal, and `node` may hold it. Returns a copy of the unit as claimed by `node`.
local function claim_for_report(t, unit_id, stored, node, token, now)
  require_running(t)
  if stored[U_STATUS] == COMPLETED or stored[U_STATUS] == FAILED then
    fail('UNIT_ALREADY_TERMINAL', 'unit ' .. unit_id .. ' is terminal')
  end
  return copy(check_claim(t, unit_id, effective(t, stored, now), node, token, now))
end

