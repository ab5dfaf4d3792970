-- Lease expiry across a partition (rule 25).
-- @requires units

-- How many more expired leases a claim ends when it found too few units: enough that a
-- claim rarely answers "none left" while an expired lease holds one, bounded per call.
local MORE_EXPIRED = 1000

-- Ends up to `limit` expired leases of a partition (rule 25) and drops index entries of units
-- that are no longer in flight. Returns how many entries it looked at and how many it ended.
local function end_expired_leases(leases_key, now, limit)
  local due = redis.call('ZRANGE', leases_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  local ended = 0
  for _, member in ipairs(due) do
    local sep = string.find(member, '\n', 1, true)
    local task_id, unit_id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local t = load_task(partition_task_keys(leases_key, 'leases', task_id), task_id, '')
    local raw = t and t.status == 'STARTED' and redis.call('HGET', t.keys.units, unit_id)
    local u = raw and cmsgpack.unpack(raw)
    if not u or u[U_STATUS] ~= IN_PROGRESS then
      redis.call('ZREM', leases_key, member)
    elseif u[U_LEASE] <= now then
      save_unit(t, unit_id, u, effective(t, u, now), now)
      ended = ended + 1
    else
      redis.call('ZADD', leases_key, u[U_LEASE], member)
    end
  end
  return #due, ended
end

