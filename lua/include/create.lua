-- What add_task and add_range_task share: their first ARGV, the checks of rules 2 and 5, and
-- writing the new version's task hash.
-- @requires tasks

-- ARGV[1 .. 10+C] (see the scripts' headers). Returns the options and the index of the next
-- ARGV entry, where the units are described.
local function creation_args(ARGV)
  local o = {
    task_id = arg_id(ARGV[1], 'task id'), payload = ARGV[2],
    lease_ms = arg_int(ARGV[3], 'lease_ms', 1, 2 ^ 40), expiry = ARGV[4],
    max_attempts = arg_int(ARGV[5], 'max_attempts', 1, 1000000),
    backoff = arg_int(ARGV[6], 'retry_backoff_ms', 0, 2 ^ 40),
    ttl = arg_int(ARGV[7], 'completed_ttl_ms', 0, 2 ^ 45),
    barrier = arg_int(ARGV[8], 'barrier', 0, 2), request_id = arg_id(ARGV[9], 'request id'),
    conflict_keys = {},
  }
  if o.expiry ~= 'reassign' and o.expiry ~= 'sticky' then
    fail('INVALID_ARGUMENT', 'on_lease_expiry must be "reassign" or "sticky"')
  end
  local n_conflicts = arg_int(ARGV[10], 'conflict key count', 0, 1000)
  for i = 11, 10 + n_conflicts do
    o.conflict_keys[#o.conflict_keys + 1] = arg_id(ARGV[i], 'conflict key')
  end
  return o, 11 + n_conflicts
end

-- Rules 2 and 5. Returns the version when this request already created the task (a retry
-- after a lost reply), else nil.
local function check_creation(keys, o)
  local previous = redis.call('HMGET', keys.task, 'status', 'request_id', 'version')
  if previous[2] == o.request_id then return tonumber(previous[3]) end
  if previous[1] and ACTIVE[previous[1]] then
    fail('TASK_EXISTS', 'task ' .. o.task_id .. ' is ' .. previous[1])
  end
  for _, key in ipairs(o.conflict_keys) do
    local holder = redis.call('HGET', keys.conflicts, key)
    if holder and holder ~= o.task_id then
      fail('TASK_CONFLICT', 'conflict key ' .. key .. ' is held by task ' .. holder)
    end
  end
  return nil
end

-- Replaces any previous version with a new STARTED one of `units_total` units (`unit_count`
-- of them for a range task, 0 for named units). Returns the version and the creation time.
local function create_task(keys, o, units_total, unit_count)
  local now = now_ms()
  delete_task_data(keys, o.task_id)
  redis.call('ZREM', keys.expiry, o.task_id)
  local version = redis.call('INCR', keys.seq)
  redis.call('HSET', keys.task,
    'version', version, 'status', 'STARTED', 'payload', o.payload, 'error', '',
    'started_at', now, 'finished_at', 0, 'lease_ms', o.lease_ms, 'on_lease_expiry', o.expiry,
    'max_attempts', o.max_attempts, 'retry_backoff_ms', o.backoff, 'completed_ttl_ms', o.ttl,
    'barrier', o.barrier, 'units_total', int(units_total), 'units_completed', 0,
    'unit_count', int(unit_count), 'conflict_keys', table.concat(o.conflict_keys, '\n'),
    'request_id', o.request_id)
  redis.call('ZADD', keys.index, 0, o.task_id)
  for _, key in ipairs(o.conflict_keys) do redis.call('HSET', keys.conflicts, key, o.task_id) end
  return version, now
end
