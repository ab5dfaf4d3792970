-- Helpers shared by the task scripts; the loader splices this file where a script says
-- `-- @include common`. Everything here is local to the including script.

local PENDING, IN_PROGRESS, COMPLETED, FAILED = 0, 1, 2, 3

-- Unit records are msgpack arrays; these are their 1-based slots.
local U_STATUS, U_GROUP, U_NODE, U_PROGRESS, U_ATTEMPT = 1, 2, 3, 4, 5
local U_UPDATED, U_FINISHED, U_ERROR, U_LEASE, U_READY = 6, 7, 8, 9, 10

local ACTIVE = { STARTED = true, PREPARING = true, SWAPPING = true }

-- Raising a table carries our error text through nested calls; the client strips the
-- location suffix the server appends.
local function fail(code, message)
  error({ err = 'DTQ_' .. code .. ' ' .. message })
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Only canonical decimal text: tonumber alone would also take "1e1", "0x2" or "nan", and
-- round digits past 2^53.
local function arg_int(value, name, min, max)
  local n = type(value) == 'string' and string.find(value, '^-?%d+$') and tonumber(value)
  if not n or string.format('%.0f', n) ~= value or n < min or n > max then
    fail('INVALID_ARGUMENT', name .. ' must be an integer in [' .. min .. ', ' .. max .. ']')
  end
  return n
end

-- Ids of tasks, units, nodes and conflict keys: 1-200 bytes, no braces, whitespace or
-- control characters (keys embed them, and lease members join them with a newline).
local function arg_id(value, name)
  if type(value) ~= 'string' or #value < 1 or #value > 200 or string.find(value, '[%c%s{}]') then
    fail('INVALID_ARGUMENT', name .. ' is not a valid id')
  end
  return value
end

local function arg_token(value)
  if value == '' then return nil end
  return arg_int(value, 'token', 0, 9007199254740992)
end

-- Every task script takes the same KEYS, in this order (dtaskq/keys.py builds them).
local function call_keys()
  return {
    task = KEYS[1], units = KEYS[2], acks = KEYS[3], nodes = KEYS[4],
    leases = KEYS[5], expiry = KEYS[6], conflicts = KEYS[7], index = KEYS[8], seq = KEYS[9],
    spans = KEYS[10], order = KEYS[11], returned = KEYS[12], kept = KEYS[13], done = KEYS[14],
    events = KEYS[15],
  }
end

-- The same keys for a task found at run time, built from one of the caller's KEYS (which ends
-- in `suffix`) so that they stay in the caller's slot; keys.py documents the layout.
local function run_time_keys(key, suffix, task_id)
  local base = string.sub(key, 1, #key - #suffix)
  return {
    task = base .. 'task:' .. task_id, units = base .. 'units:' .. task_id,
    acks = base .. 'acks:' .. task_id, nodes = base .. 'nodes:' .. task_id,
    leases = base .. 'leases', expiry = base .. 'expiry', conflicts = base .. 'conflicts',
    index = base .. 'tasks', seq = base .. 'seq',
    spans = base .. 'spans:' .. task_id, order = base .. 'order:' .. task_id,
    returned = base .. 'returned:' .. task_id, kept = base .. 'kept:' .. task_id,
    done = base .. 'done:' .. task_id, events = base .. 'events',
  }
end

-- The partition's event stream tells schedulers what changed (DESIGN §7). Each entry is
-- kind, task, version, then the kind's own fields:
--   added                     a task version was created
--   claimed   node            `node` became an owner of the task (it owns its first unit)
--   returned  node            a unit went back to PENDING from IN_PROGRESS: any node may
--                             claim it (node ""), or it is kept for `node` (sticky)
--   group     group           the last unit of a group of named units completed
--   status    status          the task's status changed
--   acked     node phase success   an ack was recorded (success 0 | 1)
--   removed                   that version's keys were deleted (cleanup, sweep)
-- Workers also resync on a slow tick, so a reader that falls behind the cap loses nothing;
-- 1000 keeps the stream small whatever the traffic.
local EVENTS_KEPT = 1000

local function emit(keys, kind, task_id, version, ...)
  redis.call('XADD', keys.events, 'MAXLEN', '~', EVENTS_KEPT, '*',
    'kind', kind, 'task', task_id, 'version', version, ...)
end

-- Units of one task that go back to PENDING for the same node in one call (a sweep of many
-- expired leases, a release) wake a scheduler once: one `returned` event per (task, node).
local returned_told = {}

local function tell_returned(t, node)
  local key = t.id .. '\n' .. node
  if returned_told[key] then return end
  returned_told[key] = true
  emit(t.keys, 'returned', t.id, t.version, 'node', node)
end

-- @include ranges

-- Every key holding one task version's state, the completion bitmaps included.
local function task_data_keys(keys, task_id)
  local found = { keys.task, keys.units, keys.acks, keys.nodes, keys.spans, keys.order,
    keys.returned, keys.kept, keys.done }
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

local function copy(u)
  local c = {}
  for i = 1, 10 do c[i] = u[i] end
  return c
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
  if t.unit_count > 0 and not place_range_unit(t, unit_id, old, new, now) then
    redis.call('HDEL', t.keys.units, unit_id)
  else
    redis.call('HSET', t.keys.units, unit_id, cmsgpack.pack(new))
  end
end

-- Saves `claimed`, unit `unit_id` as a claim has just taken it, with a fresh lease; returns
-- its token.
local function hold(t, unit_id, stored, claimed, now)
  claimed[U_LEASE] = now + t.lease_ms
  claimed[U_UPDATED] = now
  save_unit(t, unit_id, stored, claimed, now)
  return claimed[U_ATTEMPT]
end

-- Ends up to `limit` expired leases of a partition (rule 25) and drops index entries of units
-- that are no longer in flight. Returns how many entries it looked at and how many it ended.
local function end_expired_leases(leases_key, now, limit)
  local due = redis.call('ZRANGE', leases_key, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  local ended = 0
  for _, member in ipairs(due) do
    local sep = string.find(member, '\n', 1, true)
    local task_id, unit_id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local t = load_task(run_time_keys(leases_key, 'leases', task_id), task_id, '')
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

-- ARGV[1..4] of the unit scripts: task id, version, unit id, node id.
local function unit_call_args()
  return arg_id(ARGV[1], 'task id'), arg_id(ARGV[2], 'version'), arg_id(ARGV[3], 'unit id'),
    arg_id(ARGV[4], 'node id')
end

-- ARGV of the scripts that act on a node's claims across a partition (heartbeat, release):
-- the node id, then quads (task id, version, unit id, token). Returns the node id.
local function claim_list_args()
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

-- The checks of a report that takes effect (claim, complete, fail): the task runs, the unit
-- is not terminal, and `node` may hold it. Returns a copy of the unit as claimed by `node`.
local function claim_for_report(t, unit_id, stored, node, token, now)
  require_running(t)
  if stored[U_STATUS] == COMPLETED or stored[U_STATUS] == FAILED then
    fail('UNIT_ALREADY_TERMINAL', 'unit ' .. unit_id .. ' is terminal')
  end
  return copy(check_claim(t, unit_id, effective(t, stored, now), node, token, now))
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

-- Nodes in the expected ack set (rule 16) lacking a successful ack for `phase`.
local function missing_acks(t, phase)
  local nodes = redis.call('HKEYS', t.keys.nodes)
  local missing = {}
  for _, node in ipairs(nodes) do
    local raw = redis.call('HGET', t.keys.acks, phase .. ':' .. node)
    if not raw or cmsgpack.unpack(raw)[1] ~= 1 then missing[#missing + 1] = node end
  end
  return missing
end

-- Moves a task whose units are all complete (or whose prepare acks are all in) to its next
-- status; a barrier phase is skipped at once when every expected ack already arrived.
local function advance(t, now)
  if t.status == 'STARTED' and t.barrier == 2 then
    t.status = 'PREPARING'
  elseif t.status == 'STARTED' and t.barrier == 1 then
    t.status = 'SWAPPING'
  elseif t.status == 'STARTED' then
    finish_task(t, 'FINISHED', '', now)
    return
  elseif t.status == 'PREPARING' then
    t.status = 'SWAPPING'
  else
    return
  end
  redis.call('HSET', t.keys.task, 'status', t.status)
  emit(t.keys, 'status', t.id, t.version, 'status', t.status)
  if t.status == 'PREPARING' and #missing_acks(t, 'prepare') == 0 then
    advance(t, now)
  end
end
