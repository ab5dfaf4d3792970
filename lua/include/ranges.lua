-- Range units (docs/ranges.md). Units 0..N-1 that nobody has claimed yet lie
-- in spans [start, end). A span is *fresh* when no node continues it, else it is continued by
-- the node that claimed unit start - 1 and will most likely want `start` next.
--   spans     every span by start, as the member "<start> <end> <node>" (node '' when fresh)
--   order     span start -> start - 2^53 when fresh (negative: fresh spans come first, in
--             region order), else its length (positive: the largest comes last). N <= 2^53
--             keeps every score exact.
--   returned  units claimed before that any node may claim again -> when they may be claimed
--   kept      sticky tasks: "<node>\n<unit>" of units kept for their node (score 0; by prefix)
--   done      the numbers k of the completion bitmaps done<k>; bit i of bitmap k is unit
--             k * 2^20 + i, so that a huge sparse task never allocates one huge string
-- A unit has a record in `units` only once claimed, and keeps it while in flight, waiting to
-- be claimed again, or failed; a completed unit keeps one only if it was claimed more than
-- once (to recognise a retried report). So a unit with no record is complete or in a span.
-- @requires args records

local FRESH = 2 ^ 53
local BITMAP_UNITS = 1048576

-- The number of range unit `unit_id`, or nil unless it is the canonical decimal of one.
local function range_unit(t, unit_id)
  if #unit_id > 16 or not string.find(unit_id, '^%d+$')
      or (#unit_id > 1 and string.byte(unit_id) == 48) then
    return nil
  end
  local n = tonumber(unit_id)
  if n >= t.unit_count then return nil end
  return n
end

local function bitmap_key(done_key, task_id, k)
  return string.sub(done_key, 1, #done_key - #task_id - 1) .. k .. ':' .. task_id
end

local function bit_of(n)
  local k = math.floor(n / BITMAP_UNITS)
  return int(k), n - k * BITMAP_UNITS
end

local function is_done(t, n)
  local k, bit = bit_of(n)
  return redis.call('GETBIT', bitmap_key(t.keys.done, t.id, k), bit) == 1
end

local function mark_done(t, n)
  local k, bit = bit_of(n)
  redis.call('SADD', t.keys.done, k)
  redis.call('SETBIT', bitmap_key(t.keys.done, t.id, k), bit, 1)
end

local function span_of(member)
  local s, e, node = string.match(member, '^(%d+) (%d+) (.*)$')
  return { s = tonumber(s), e = tonumber(e), node = node, member = member }
end

local function add_span(t, s, e, node)
  if e <= s then return end
  local start = int(s)
  redis.call('ZADD', t.keys.spans, start, start .. ' ' .. int(e) .. ' ' .. node)
  redis.call('ZADD', t.keys.order, node == '' and s - FRESH or e - s, start)
end

local function remove_span(t, span)
  redis.call('ZREM', t.keys.spans, span.member)
  redis.call('ZREM', t.keys.order, int(span.s))
end

local function span_starting(t, s)
  local m = redis.call('ZRANGE', t.keys.spans, int(s), int(s), 'BYSCORE', 'LIMIT', 0, 1)[1]
  return m and span_of(m)
end

-- The span holding unit n, or nil when n is claimed or complete.
local function span_containing(t, n)
  local m = redis.call('ZRANGE', t.keys.spans, int(n), '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)[1]
  local span = m and span_of(m)
  if span and span.e > n then return span end
  return nil
end

-- Takes units [n, n + count) out of `span` for `node`: what lies before stays as it was, and
-- what lies after continues with `node`, whose next unit it is.
local function carve(t, span, n, count, node)
  remove_span(t, span)
  add_span(t, span.s, n, span.node)
  add_span(t, n + count, span.e, node)
end

-- The first fresh span in region order, else the largest span (which a claim splits); nil
-- when no unit is left unclaimed. The second result says whether the span is fresh.
local function next_span(t)
  local first = redis.call('ZRANGE', t.keys.order, 0, 0, 'WITHSCORES')
  if #first == 0 then return nil, false end
  local fresh = tonumber(first[2]) < 0
  local start = fresh and first[1] or redis.call('ZRANGE', t.keys.order, -1, -1)[1]
  return span_starting(t, tonumber(start)), fresh
end

-- A lease on unit n - 1 ended: nobody continues into the span after it any more.
local function free_continuation(t, n, node)
  local span = span_starting(t, n)
  if span and span.node == node and node ~= '' then
    remove_span(t, span)
    add_span(t, span.s, span.e, '')
  end
end

-- A unit waiting to be claimed again goes to `unassigned` (by when it is ready) or, sticky, to
-- the `kept` set of its node.
local function start_waiting(t, unit_id, u, unassigned)
  if u[U_NODE] == '' then
    redis.call('ZADD', unassigned, u[U_READY], unit_id)
  else
    redis.call('ZADD', t.keys.kept, 0, u[U_NODE] .. '\n' .. unit_id)
  end
end

local function stop_waiting(t, unit_id, u, unassigned)
  if u[U_NODE] == '' then
    redis.call('ZREM', unassigned, unit_id)
  else
    redis.call('ZREM', t.keys.kept, u[U_NODE] .. '\n' .. unit_id)
  end
end

-- A waiting unit that `node` may claim now: one kept for it (sticky tasks), else the first in
-- `unassigned` (units returned to any node, ready first). Else nil,
-- and when the next waiting one will be ready (0: none waits).
local function waiting_unit(t, node, now, unassigned)
  local soonest = 0
  if t.sticky then
    local mine = redis.call('ZRANGE', t.keys.kept, '[' .. node .. '\n', '(' .. node .. '\011',
      'BYLEX', 'LIMIT', 0, 100)
    for _, member in ipairs(mine) do
      local unit_id = string.sub(member, #node + 2)
      local ready = cmsgpack.unpack(redis.call('HGET', t.keys.units, unit_id))[U_READY]
      if ready <= now then return unit_id, 0 end
      if soonest == 0 or ready < soonest then soonest = ready end
    end
  end
  local first = redis.call('ZRANGE', unassigned, 0, 0, 'WITHSCORES')
  if #first == 0 then return nil, soonest end
  local ready = tonumber(first[2])
  if ready <= now then return first[1], 0 end
  if soonest == 0 or ready < soonest then soonest = ready end
  return nil, soonest
end

-- Moves range unit `unit_id` from where `old` left it to where `new` puts it. Returns false
-- when its record is no longer needed (complete under its first claim).
local function place_range_unit(t, unit_id, old, new, now)
  local n = tonumber(unit_id)
  if old.span then
    carve(t, old.span, n, 1, new[U_NODE])
  elseif old[U_STATUS] == PENDING then
    stop_waiting(t, unit_id, old, t.keys.returned)
  elseif old[U_STATUS] == IN_PROGRESS and old[U_LEASE] <= now then
    free_continuation(t, n + 1, old[U_NODE])
  end
  if new[U_STATUS] == PENDING then
    start_waiting(t, unit_id, new, t.keys.returned)
  elseif new[U_STATUS] == COMPLETED then
    mark_done(t, n)
    return new[U_ATTEMPT] > 1
  end
  return true
end
