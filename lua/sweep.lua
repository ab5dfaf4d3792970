-- sweep: bounded maintenance of one partition. Ends expired leases (rule 25) and deletes
-- terminal tasks past their TTL (rule 22). Idempotent; safe to run from many workers.
-- KEYS[1] lease index ("<base>leases")   KEYS[2] expiry index   KEYS[3] task index
-- ARGV[1] limit: at most this many items handled per call (1..10000)
-- Returns: {leases reclaimed, tasks deleted, 1 if more items are due else 0}
-- Errors: DTQ_INVALID_ARGUMENT
-- @include common

local limit = arg_int(ARGV[1], 'limit', 1, 10000)
local now = now_ms()
local reclaimed, deleted = 0, 0

local due = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  local sep = string.find(member, '\n', 1, true)
  local task_id, unit_id = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local t = load_task(run_time_keys(KEYS[1], 'leases', task_id), task_id, '')
  local raw = t and t.status == 'STARTED' and redis.call('HGET', t.keys.units, unit_id)
  local u = raw and cmsgpack.unpack(raw)
  if not u or u[U_STATUS] ~= IN_PROGRESS then
    redis.call('ZREM', KEYS[1], member)
  elseif u[U_LEASE] <= now then
    save_unit(t, unit_id, u, effective(t, u, now))
    reclaimed = reclaimed + 1
  else
    redis.call('ZADD', KEYS[1], u[U_LEASE], member)
  end
end

-- Scores are finished_at + TTL, so every entry below `now` is past its TTL (rule 22: strictly).
local expired = redis.call('ZRANGE', KEYS[2], '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, limit - #due)
for _, task_id in ipairs(expired) do
  local keys = run_time_keys(KEYS[1], 'leases', task_id)
  local t = load_task(keys, task_id, '')
  if not t or not ACTIVE[t.status] then
    redis.call('DEL', keys.task, keys.units, keys.acks, keys.nodes)
    redis.call('ZREM', KEYS[3], task_id)
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[2], task_id)
end

local more = 0
if #redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 1) > 0
    or #redis.call('ZRANGE', KEYS[2], '-inf', '(' .. now, 'BYSCORE', 'LIMIT', 0, 1) > 0 then
  more = 1
end
return { reclaimed, deleted, more }
