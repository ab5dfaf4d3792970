-- claim_range: completes the units a node reports done, then hands it up to k units of a range
-- task (docs/ranges.md): one round trip per unit, or per batch. Each unit handed out is what
-- claim_next(last) would give, `last` being the unit handed out before it: last + 1 while it
-- is unclaimed; else a waiting unit (kept for this node, or returned after a lease expiry or a
-- retryable failure) that is ready; else the first unit of the first fresh span; else the
-- first unit of the right half of the largest span. Each claim starts a lease (rule 6). It
-- first ends a few expired leases of the partition, so that their units come back at once.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] node id   ARGV[4] max units k (0..1000)
-- ARGV[5] last: the unit this node claimed last, in [0, N), or "" for none (claim_first)
-- ARGV[6] request id "<claimer>/<n>": the same for every retry of one call; a retry after a
--         lost reply gets the answer of its first try (kept per claimer in `answers`)
-- ARGV[7] C, the number of units to complete first (0..1000), then C pairs (unit id, token)
-- Returns: {wait_ms, completions, first, count, token, first, count, token, ...}:
--          completions holds one answer per unit to complete, in order: "" completed (or
--          already completed by this node under that token), else the code of the rejection
--          (LEASE_LOST, UNIT_WRONG_NODE, UNIT_ALREADY_TERMINAL, UNIT_NOT_READY,
--          TASK_DOES_NOT_EXIST, TASK_NOT_RUNNING once an earlier completion of the call moved
--          the task on); then runs of units claimed under one token, in claim order.
--          Without runs, wait_ms 0 means that no unit is left to hand out (also once every
--          unit is complete); wait_ms > 0 that the next unit backing off after a retryable
--          failure is ready in that many ms.
-- Events: claimed (when the node becomes an owner of the task), returned (by the expired
--         leases it ends first), status (the last completion moved the task on)
-- Errors: DTQ_INVALID_ARGUMENT (also for a task of named units), DTQ_TASK_DOES_NOT_EXIST,
--         DTQ_TASK_NOT_RUNNING (the task failed or was cancelled)

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local node = arg_id(ARGV[3], 'node id')
local k = arg_int(ARGV[4], 'max_units', 0, 1000)
local last = nil
if ARGV[5] ~= '' then last = arg_int(ARGV[5], 'last', 0, 2 ^ 53 - 1) end
local request_id = arg_id(ARGV[6], 'request id')
local done, after = completion_args(ARGV, 7)
if #ARGV ~= after - 1 then fail('INVALID_ARGUMENT', 'expected ' .. #done .. ' (unit id, token) pairs last') end
if k == 0 and #done == 0 then fail('INVALID_ARGUMENT', 'max_units must be at least 1 when nothing is completed') end
local t = require_task(task_keys(KEYS, task_id), task_id, version)
local answered = kept_answer(t, request_id)
if answered then return answered end
if t.unit_count == 0 then
  fail('INVALID_ARGUMENT', 'task ' .. task_id .. ' has named units; claim them with claim_any')
end
if last and last >= t.unit_count then
  fail('INVALID_ARGUMENT', 'last must be a unit of the task, in [0, ' .. int(t.unit_count) .. ')')
end
local reply, now, going_on = complete_before_claiming(t, node, done, request_id)
if not going_on then return reply end

local got = 0

local function answer(n, count, token)
  local at = #reply
  if at > 2 and reply[at] == token and reply[at - 2] + reply[at - 1] == n then
    reply[at - 1] = reply[at - 1] + count
  else
    reply[at + 1], reply[at + 2], reply[at + 3] = n, count, token
  end
  got = got + count
  last = n + count - 1
end

-- Units [n, n + count) leave a span: each gets its first claim. Written in batches rather
-- than through save_unit, since this is the path almost every unit takes.
local function hand_out(n, count)
  local deadline = now + t.lease_ms
  local record = cmsgpack.pack({ IN_PROGRESS, '', node, 0, 1, now, 0, '', deadline, 0 })
  local records, leases = {}, {}
  for i = n, n + count - 1 do
    local unit_id = int(i)
    records[#records + 1] = unit_id
    records[#records + 1] = record
    leases[#leases + 1] = deadline
    leases[#leases + 1] = t.id .. '\n' .. unit_id
  end
  redis.call('HSET', t.keys.units, unpack(records))
  redis.call('ZADD', t.keys.leases, unpack(leases))
  if redis.call('HINCRBY', t.keys.nodes, node, count) == count then
    emit(t.keys, 'claimed', t.id, t.version, 'node', node)
  end
  answer(n, count, 1)
end

local function claim_waiting(unit_id)
  local stored = cmsgpack.unpack(redis.call('HGET', t.keys.units, unit_id))
  local token = hold(t, unit_id, stored, copy(check_claim(t, unit_id, stored, node, nil, now)), now)
  answer(tonumber(unit_id), 1, token)
end

local soonest = 0
for _ = 1, 2 do
  while got < k do
    local span = last and last + 1 < t.unit_count and span_containing(t, last + 1)
    local n = span and last + 1
    if not span then
      local unit_id
      unit_id, soonest = waiting_unit(t, node, now, t.keys.returned)
      if unit_id then
        claim_waiting(unit_id)
      else
        local fresh
        span, fresh = next_span(t)
        if not span then break end
        n = fresh and span.s or span.s + math.floor((span.e - span.s) / 2)
      end
    end
    if span then
      local count = math.min(k - got, span.e - n)
      carve(t, span, n, count, node)
      hand_out(n, count)
    end
  end
  -- Short of units: leases that ran out beyond the few ended above may hold some.
  if got == k or select(2, end_expired_leases(t.keys.leases, now, MORE_EXPIRED)) == 0 then break end
end
if got == 0 and soonest > 0 then reply[1] = math.max(1, soonest - now) end
-- A call that changed nothing is kept for no retry: a retry may as well look again.
if got > 0 or #done > 0 then keep_answer(t, request_id, reply) end
return reply
