-- handle_dead: requeues or purges entries of a queue partition's dead-letter set (rule J6).
-- A requeued job starts again with all its attempts, at the tail of its lane; a purged one
-- is deleted.
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] "requeue" or "purge"
-- ARGV[2] handler name the jobs must have, "" for any
-- ARGV[3] offset: entries to skip from the oldest (those a previous call kept)
-- ARGV[4] the most entries to look at (1..10000)
-- ARGV[5..] job ids: only these (looked up directly; offset is then ignored)
-- Returns: {handled, kept, more}: entries requeued or purged, entries looked at and kept (the
--          next call's offset grows by this), 1 when entries are left past those seen else 0
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local action = ARGV[1]
if action ~= 'requeue' and action ~= 'purge' then
  fail('INVALID_ARGUMENT', 'action must be requeue or purge')
end
local handler = ARGV[2]
if handler ~= '' then arg_id(handler, 'handler name') end
local offset = arg_int(ARGV[3], 'offset', 0, 9007199254740992)
local limit = arg_int(ARGV[4], 'limit', 1, 10000)
local ids = {}
for i = 5, #ARGV do ids[#ids + 1] = arg_id(ARGV[i], 'job id') end
local dead = q.base .. 'dead'
local more = false
if #ids == 0 then
  ids = redis.call('ZRANGE', dead, offset, offset + limit - 1)
  more = redis.call('ZCARD', dead) > offset + #ids
end

local handled, kept, woke = 0, 0, false
for _, id in ipairs(ids) do
  local key = job_key(q, id)
  local f = redis.call('HMGET', key, 'h', 'p', 'd')
  if redis.call('ZSCORE', dead, id) and f[1] and (handler == '' or f[1] == handler) then
    redis.call('ZREM', dead, id)
    redis.call('DEL', q.base .. 'done:' .. id)
    if action == 'purge' then
      redis.call('DEL', key)
    else
      redis.call('PERSIST', key)
      redis.call('HDEL', key, 'x', 'F', 'l', 'f')
      redis.call('HSET', key, 's', JOB_QUEUED)
      job_push_ready(q, id, tonumber(f[2] or '0'), opt_num(f[3]), false)
      woke = true
    end
    handled = handled + 1
  else
    kept = kept + 1
  end
end
if woke then job_wake(q) end
return { handled, kept, more and 1 or 0 }
