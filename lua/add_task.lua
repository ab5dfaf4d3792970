-- add_task: creates a task with named units, or a new version of a terminal task (rules 1-5).
-- KEYS[1] task hash         KEYS[2] units hash       KEYS[3] acks hash
-- KEYS[4] node counts hash  KEYS[5] lease index      KEYS[6] expiry index
-- KEYS[7] conflict holders  KEYS[8] task index       KEYS[9] version counter
-- ARGV[1] task id       ARGV[2] payload (bytes)      ARGV[3] lease_ms (>= 1)
-- ARGV[4] on_lease_expiry ("reassign" | "sticky")   ARGV[5] max_attempts (>= 1)
-- ARGV[6] retry_backoff_ms (>= 0)   ARGV[7] completed_ttl_ms (>= 0)
-- ARGV[8] barrier (0 none, 1 ack, 2 prepare+ack)
-- ARGV[9] request id: the same for every retry of one call, so a retry after a lost reply
--         gets the version it created instead of DTQ_TASK_EXISTS
-- ARGV[10] number of conflict keys C
-- ARGV[11 .. 10+C] conflict keys, then pairs (unit id, group), at least one pair
-- Returns: the new version (integer)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_EXISTS, DTQ_TASK_CONFLICT
-- @include common

local keys = call_keys()
local task_id = arg_id(ARGV[1], 'task id')
local payload = ARGV[2]
local lease_ms = arg_int(ARGV[3], 'lease_ms', 1, 2 ^ 40)
local expiry = ARGV[4]
if expiry ~= 'reassign' and expiry ~= 'sticky' then
  fail('INVALID_ARGUMENT', 'on_lease_expiry must be "reassign" or "sticky"')
end
local max_attempts = arg_int(ARGV[5], 'max_attempts', 1, 1000000)
local backoff = arg_int(ARGV[6], 'retry_backoff_ms', 0, 2 ^ 40)
local ttl = arg_int(ARGV[7], 'completed_ttl_ms', 0, 2 ^ 45)
local barrier = arg_int(ARGV[8], 'barrier', 0, 2)
local request_id = arg_id(ARGV[9], 'request id')
local n_conflicts = arg_int(ARGV[10], 'conflict key count', 0, 1000)
local first_unit = 11 + n_conflicts
local n_args = #ARGV - first_unit + 1
if n_args < 2 or n_args % 2 ~= 0 or n_args > 200000 then
  fail('INVALID_ARGUMENT', 'a task needs 1 to 100000 (unit id, group) pairs')
end

local conflict_keys = {}
for i = 11, first_unit - 1 do conflict_keys[#conflict_keys + 1] = arg_id(ARGV[i], 'conflict key') end
local seen = {}
for i = first_unit, #ARGV, 2 do
  local unit_id = arg_id(ARGV[i], 'unit id')
  if seen[unit_id] then fail('INVALID_ARGUMENT', 'duplicate unit id ' .. unit_id) end
  seen[unit_id] = true
  local group = ARGV[i + 1]
  if #group > 200 or string.find(group, '%c') then fail('INVALID_ARGUMENT', 'group of ' .. unit_id .. ' is not valid') end
end

local previous = redis.call('HMGET', keys.task, 'status', 'request_id', 'version')
if previous[2] == request_id then return tonumber(previous[3]) end
previous = previous[1]
if previous and ACTIVE[previous] then
  fail('TASK_EXISTS', 'task ' .. task_id .. ' is ' .. previous)
end
for _, key in ipairs(conflict_keys) do
  local holder = redis.call('HGET', keys.conflicts, key)
  if holder and holder ~= task_id then
    fail('TASK_CONFLICT', 'conflict key ' .. key .. ' is held by task ' .. holder)
  end
end

-- All checks passed; from here on the script writes.
local now = now_ms()
redis.call('DEL', keys.task, keys.units, keys.acks, keys.nodes)
redis.call('ZREM', keys.expiry, task_id)
local version = redis.call('INCR', keys.seq)
local n_units = n_args / 2
redis.call('HSET', keys.task,
  'version', version, 'status', 'STARTED', 'payload', payload, 'error', '',
  'started_at', now, 'finished_at', 0, 'lease_ms', lease_ms, 'on_lease_expiry', expiry,
  'max_attempts', max_attempts, 'retry_backoff_ms', backoff, 'completed_ttl_ms', ttl,
  'barrier', barrier, 'units_total', n_units, 'units_completed', 0,
  'conflict_keys', table.concat(conflict_keys, '\n'), 'request_id', request_id)

local fresh = {}
local batch = {}
for i = first_unit, #ARGV, 2 do
  local group = ARGV[i + 1]
  if not fresh[group] then fresh[group] = cmsgpack.pack({ PENDING, group, '', 0, 0, now, 0, '', 0, 0 }) end
  batch[#batch + 1] = ARGV[i]
  batch[#batch + 1] = fresh[group]
  if #batch == 1000 then
    redis.call('HSET', keys.units, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', keys.units, unpack(batch)) end

redis.call('ZADD', keys.index, 0, task_id)
for _, key in ipairs(conflict_keys) do redis.call('HSET', keys.conflicts, key, task_id) end
return version
