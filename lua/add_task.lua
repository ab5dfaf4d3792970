-- add_task: creates a task with named units, or a new version of a terminal task (rules 1-5).
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id       ARGV[2] payload (bytes)      ARGV[3] lease_ms (>= 1)
-- ARGV[4] on_lease_expiry ("reassign" | "sticky")   ARGV[5] max_attempts (>= 1)
-- ARGV[6] retry_backoff_ms (>= 0)   ARGV[7] completed_ttl_ms (>= 0)
-- ARGV[8] barrier (0 none, 1 ack, 2 prepare+ack)
-- ARGV[9] request id: the same for every retry of one call, so a retry after a lost reply
--         gets the version it created instead of DTQ_TASK_EXISTS
-- ARGV[10] number of conflict keys C
-- ARGV[11 .. 10+C] conflict keys, then pairs (unit id, group), at least one pair
-- Every unit waits in `pending` (docs/keys.md) until its first claim, in the order given.
-- Writes the task hash field "group:<name>" per group (the group "" included): the number of
-- its units not yet complete, so complete_unit can tell when a group is done.
-- Events: added
-- Returns: the new version (integer)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_EXISTS, DTQ_TASK_CONFLICT

local o, first_unit = creation_args(ARGV)
local keys = task_keys(KEYS, o.task_id)
local n_args = #ARGV - first_unit + 1
if n_args < 2 or n_args % 2 ~= 0 or n_args > 200000 then
  fail('INVALID_ARGUMENT', 'a task needs 1 to 100000 (unit id, group) pairs')
end
local seen = {}
for i = first_unit, #ARGV, 2 do
  local unit_id = arg_id(ARGV[i], 'unit id')
  if seen[unit_id] then fail('INVALID_ARGUMENT', 'duplicate unit id ' .. unit_id) end
  seen[unit_id] = true
  local group = ARGV[i + 1]
  if #group > 200 or string.find(group, '%c') then fail('INVALID_ARGUMENT', 'group of ' .. unit_id .. ' is not valid') end
end
local retried = check_creation(keys, o)
if retried then return retried end

-- All checks passed; from here on the script writes.
local version, now = create_task(keys, o, n_args / 2, 0)
local fresh = {}
local group_sizes = {}
local batch, pending = {}, {}
for i = first_unit, #ARGV, 2 do
  local group = ARGV[i + 1]
  if not fresh[group] then
    fresh[group] = cmsgpack.pack({ PENDING, group, '', 0, 0, now, 0, '', 0, 0 })
    group_sizes[group] = 0
  end
  group_sizes[group] = group_sizes[group] + 1
  batch[#batch + 1] = ARGV[i]
  batch[#batch + 1] = fresh[group]
  pending[#pending + 1] = (i - first_unit) / 2
  pending[#pending + 1] = ARGV[i]
  if #batch == 1000 then
    redis.call('HSET', keys.units, unpack(batch))
    redis.call('ZADD', keys.pending, unpack(pending))
    batch, pending = {}, {}
  end
end
if #batch > 0 then
  redis.call('HSET', keys.units, unpack(batch))
  redis.call('ZADD', keys.pending, unpack(pending))
end
batch = {}
for group, size in pairs(group_sizes) do
  batch[#batch + 1] = 'group:' .. group
  batch[#batch + 1] = size
  if #batch == 1000 then
    redis.call('HSET', keys.task, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', keys.task, unpack(batch)) end
emit(keys, 'added', o.task_id, version)
return version
