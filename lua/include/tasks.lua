-- Task records: loading, terminal statuses, conflict keys and deletion.
-- @requires args keys events ranges

-- Every key holding one task version's state, the completion bitmaps included.
local function task_data_keys(keys, task_id)
  local found = { keys.task, keys.units, keys.acks, keys.nodes, keys.spans, keys.order,
    keys.returned, keys.kept, keys.done, keys.pending, keys.owned, keys.groups,
    keys.answers }
  for _, k in ipairs(redis.call('SMEMBERS', keys.done)) do
    found[#found + 1] = bitmap_key(keys.done, task_id, k)
  end
  return found
end

local function delete_task_data(keys, task_id)
  for _, key in ipairs(task_data_keys(keys, task_id)) do redis.call('DEL', key) end
end

local TASK_FIELDS = {
  'version', 'status', 'lease_ms', 'on_lease_expiry', 'max_attempts', 'retry_backoff_ms',
  'completed_ttl_ms', 'barrier', 'units_total', 'units_completed', 'finished_at', 'unit_count',
}

-- Loads the task named by (id, version); version '' means "whatever is current".
-- Returns nil when the task or that version does not exist.
local function load_task(keys, task_id, version)
  local v = redis.call('HMGET', keys.task, unpack(TASK_FIELDS))
  if not v[1] or (version ~= '' and v[1] ~= version) then return nil end
  return {
    id = task_id, keys = keys,
    version = v[1], status = v[2], lease_ms = tonumber(v[3]), sticky = v[4] == 'sticky',
    max_attempts = tonumber(v[5]), retry_backoff_ms = tonumber(v[6]),
    ttl_ms = tonumber(v[7]), barrier = tonumber(v[8]),
    units_total = tonumber(v[9]), units_completed = tonumber(v[10]),
    finished_at = tonumber(v[11] or '0'), unit_count = tonumber(v[12] or '0'),
  }
end

local function require_task(keys, task_id, version)
  local t = load_task(keys, task_id, version)
  if not t then fail('TASK_DOES_NOT_EXIST', 'task ' .. task_id .. ' version ' .. version .. ' does not exist') end
  return t
end

local function require_running(t)
  if t.status ~= 'STARTED' then fail('TASK_NOT_RUNNING', 'task ' .. t.id .. ' is ' .. t.status) end
end


local function release_conflict_keys(t)
  local conflicts_key = t.keys.conflicts
  local ckeys = redis.call('HGET', t.keys.task, 'conflict_keys')
  if not ckeys or ckeys == '' then return end
  for key in string.gmatch(ckeys, '[^\n]+') do
    if redis.call('HGET', conflicts_key, key) == t.id then redis.call('HDEL', conflicts_key, key) end
  end
end

-- Past the TTL the sweeper deletes a terminal task; the key TTL set here is only a backstop
-- for a namespace that no worker sweeps any more.
local BACKSTOP_MS = 3600000

local function finish_task(t, status, err, now)
  local finished_at = t.finished_at
  if finished_at == 0 then finished_at = now end
  redis.call('HSET', t.keys.task, 'status', status, 'error', err, 'finished_at', finished_at)
  t.status = status
  t.finished_at = finished_at
  emit(t.keys, 'status', t.id, t.version, 'status', status)
  release_conflict_keys(t)
  redis.call('ZADD', t.keys.expiry, finished_at + t.ttl_ms, t.id)
  for _, key in ipairs(task_data_keys(t.keys, t.id)) do
    redis.call('PEXPIRE', key, t.ttl_ms + BACKSTOP_MS)
  end
end

