-- Completing units (rule 12), alone (complete_unit) or as the first half of a claim that then
-- hands out the next units (claim_range, claim_any), and the answer a claim keeps so that a
-- retry after a lost reply gets the same units back.
-- @requires barriers units leases

-- Completes `unit_id` for `node` under `token` (nil: check the node only); raises the DTQ
-- error of a rejection before writing anything. An identical retry succeeds unchanged.
-- Returns the token the unit completed under.
local function complete_one(t, unit_id, node, token, now)
  local stored = require_unit(t, unit_id)
  if completed_by(t, stored, node, token) then return stored[U_ATTEMPT] end
  local u = claim_for_report(t, unit_id, stored, node, token, now)
  u[U_STATUS] = COMPLETED
  u[U_PROGRESS] = 1
  u[U_UPDATED] = now
  u[U_FINISHED] = now
  u[U_LEASE] = 0
  save_unit(t, unit_id, stored, u, now)
  if t.unit_count == 0 and redis.call('HINCRBY', t.keys.task, 'group:' .. u[U_GROUP], -1) == 0 then
    emit(t.keys, 'group', t.id, t.version, 'group', u[U_GROUP])
  end
  t.units_completed = redis.call('HINCRBY', t.keys.task, 'units_completed', 1)
  if t.units_completed == t.units_total then
    units_finished(t, now)
    advance(t, now)
  end
  return u[U_ATTEMPT]
end

-- ARGV[at] the number C of completions (0..1000), then C pairs (unit id, token). Returns the
-- pairs and the index of the next ARGV entry.
local function completion_args(ARGV, at)
  local count = arg_int(ARGV[at], 'completion count', 0, 1000)
  local list = {}
  for i = at + 1, at + 2 * count, 2 do
    list[#list + 1] = { arg_id(ARGV[i], 'unit id'), arg_int(ARGV[i + 1], 'token', 0, 2 ^ 53) }
  end
  return list, at + 1 + 2 * count
end

-- Range units that `node` completes under their first claim, lease running: what almost
-- every completion of a range task is. They are written together (one read of their records,
-- one write of each index) with the same effect as complete_one on each. Returns the indexes
-- in `list` of the other completions, which complete_one handles.
local function complete_first_claims(t, node, list, now, answers)
  local ids = {}
  for i, c in ipairs(list) do ids[i] = c[1] end
  local records = redis.call('HMGET', t.keys.units, unpack(ids))
  local done, members, rest, seen = {}, {}, {}, {}
  for i, c in ipairs(list) do
    local u = records[i] and cmsgpack.unpack(records[i])
    local n = range_unit(t, c[1])
    if n and u and not seen[c[1]] and u[U_STATUS] == IN_PROGRESS and u[U_NODE] == node
        and u[U_ATTEMPT] == 1 and c[2] == 1 and u[U_LEASE] > now then
      seen[c[1]] = true
      done[#done + 1] = n
      members[#members + 1] = t.id .. '\n' .. c[1]
      answers[i] = ''
    else
      rest[#rest + 1] = i
    end
  end
  if #done == 0 then return rest end
  redis.call('ZREM', t.keys.leases, unpack(members))
  -- A unit complete under its first claim keeps no record (lua/include/ranges.lua).
  local dropped, bitmaps = {}, {}
  for _, n in ipairs(done) do
    dropped[#dropped + 1] = int(n)
    local k, bit = bit_of(n)
    bitmaps[k] = true
    redis.call('SETBIT', bitmap_key(t.keys.done, t.id, k), bit, 1)
  end
  for k in pairs(bitmaps) do redis.call('SADD', t.keys.done, k) end
  redis.call('HDEL', t.keys.units, unpack(dropped))
  t.units_completed = redis.call('HINCRBY', t.keys.task, 'units_completed', #done)
  if t.units_completed == t.units_total then
    units_finished(t, now)
    advance(t, now)
  end
  return rest
end

-- Completes each (unit, token) of `list` for `node`. A completion that its unit's state turns
-- away leaves that unit as it was and does not stop the others (its unit went to another node
-- after a lease expiry, say). Returns one answer per completion: '' when the unit is complete,
-- now or by an identical earlier report, else the code of the rejection ('LEASE_LOST', ...).
local function complete_all(t, node, list, now)
  local answers = {}
  local rest = {}
  if t.unit_count > 0 and #list > 0 then
    rest = complete_first_claims(t, node, list, now, answers)
  else
    for i = 1, #list do rest[i] = i end
  end
  for _, i in ipairs(rest) do
    local c = list[i]
    local ok, err = pcall(complete_one, t, c[1], node, c[2], now)
    -- The server hands pcall our error either as raised or as its text.
    local text = type(err) == 'table' and err.err or err
    if ok then
      answers[i] = ''
    elseif type(text) == 'string' and string.find(text, '^DTQ_') then
      answers[i] = string.match(text, '^DTQ_([%w_]+)')
    else
      error(err, 0)
    end
  end
  return answers
end

-- A claim keeps its answer per claimer (the request id up to its '/': one thread, or one
-- asyncio task, of one process), so that a claimer that retries after a lost reply gets its own
-- units back whatever its siblings claimed meanwhile. At most MAX_CLAIMERS answers are kept per
-- task; past that they are dropped together, and a retry then in flight claims anew (its first
-- units come back when their leases run out).
local MAX_CLAIMERS = 1024

local function claimer_of(request_id)
  return string.match(request_id, '^(.*)/') or request_id
end

local function kept_answer(t, request_id)
  local raw = redis.call('HGET', t.keys.answers, claimer_of(request_id))
  if not raw then return nil end
  local answer = cmsgpack.unpack(raw)
  if answer[1] == request_id then return answer[2] end
  return nil
end

local function keep_answer(t, request_id, reply)
  if redis.call('HLEN', t.keys.answers) >= MAX_CLAIMERS then redis.call('DEL', t.keys.answers) end
  redis.call('HSET', t.keys.answers, claimer_of(request_id), cmsgpack.pack({ request_id, reply }))
  -- A task that ended already set the backstop TTL of its keys: this one may be new.
  if t.finished_at > 0 then redis.call('PEXPIRE', t.keys.answers, t.ttl_ms + BACKSTOP_MS) end
end

-- The first half of claim_range and claim_any: checks that the task may take reports,
-- completes `done`, and ends a few expired leases of the partition, so that their units come
-- back at once. Returns the reply so far, the time, and false when the claim ends there
-- (the task is past STARTED: every unit is complete).
local function complete_before_claiming(t, node, done, request_id)
  if t.status == 'FAILED' or t.status == 'CANCELLED' then require_running(t) end
  local now = now_ms()
  local reply = { 0, complete_all(t, node, done, now) }
  if t.status ~= 'STARTED' then
    if #done > 0 then keep_answer(t, request_id, reply) end
    return reply, now, false
  end
  end_expired_leases(t.keys.leases, now, 8)
  return reply, now, true
end
