-- claim_any: completes the units a node reports done, then hands it up to k pending units of a
-- task of named units, each with a new lease (rule 6): first units kept for this node (sticky
-- tasks), then unassigned ones that are ready (returned after a lease expiry or a retryable
-- failure first, by when they may be, then fresh ones in the order the task lists them). With a filter, only units
-- it names are handed out. Never a unit that a node holds, this one included: each claimed
-- unit goes to exactly one caller. Costs O(log n) a unit, O(filter) with a filter. It first
-- ends a few expired leases of the partition, so that their units come back at once.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] node id   ARGV[4] max units k (0..1000)
-- ARGV[5] request id "<claimer>/<n>": the same for every retry of one call; a retry after a
--         lost reply gets the answer of its first try (kept per claimer in `answers`)
-- ARGV[6] C, the number of units to complete first (0..1000), then C pairs (unit id, token)
-- ARGV[7+2C] F, the number of unit ids in the filter (0: no filter, at most 100000), then them
-- Returns: {wait_ms, completions, unit id, token, unit id, token, ...}: completions as in
--          claim_range; then the units claimed. Without units, wait_ms 0 means that no unit is
--          left to hand out (to this node, within the filter); wait_ms > 0 that the next one
--          backing off after a retryable failure is ready in that many ms.
-- Events: claimed (when the node becomes an owner of the task), returned (by the expired
--         leases it ends first), group and status (from the completions)
-- Errors: DTQ_INVALID_ARGUMENT (also for a range task), DTQ_TASK_DOES_NOT_EXIST,
--         DTQ_TASK_NOT_RUNNING (the task failed or was cancelled)

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local node = arg_id(ARGV[3], 'node id')
local k = arg_int(ARGV[4], 'max_units', 0, 1000)
local request_id = arg_id(ARGV[5], 'request id')
local done, at = completion_args(ARGV, 6)
local n_filter = arg_int(ARGV[at], 'filter size', 0, 100000)
if #ARGV ~= at + n_filter then fail('INVALID_ARGUMENT', 'expected ' .. n_filter .. ' unit ids in the filter') end
for i = at + 1, at + n_filter do arg_id(ARGV[i], 'unit id') end
if k == 0 and #done == 0 then fail('INVALID_ARGUMENT', 'max_units must be at least 1 when nothing is completed') end
local t = require_task(task_keys(KEYS, task_id), task_id, version)
local answered = kept_answer(t, request_id)
if answered then return answered end
if t.unit_count > 0 then
  fail('INVALID_ARGUMENT', 'task ' .. task_id .. ' is a range task; claim its units with claim_range')
end
local reply, now, going_on = complete_before_claiming(t, node, done, request_id)
if not going_on then return reply end

local soonest = 0
local function claim(unit_id, stored)
  local claimed = copy(check_claim(t, unit_id, effective(t, stored, now), node, nil, now))
  local token = hold(t, unit_id, stored, claimed, now)
  reply[#reply + 1] = unit_id
  reply[#reply + 1] = token
end

local function next_unit()
  local unit_id
  unit_id, soonest = waiting_unit(t, node, now, t.keys.returned)
  return unit_id or redis.call('ZRANGE', t.keys.pending, 0, 0)[1]
end

if n_filter == 0 then
  for _ = 1, 2 do
    while #reply - 2 < 2 * k do
      local unit_id = next_unit()
      if not unit_id then break end
      claim(unit_id, cmsgpack.unpack(redis.call('HGET', t.keys.units, unit_id)))
    end
    -- Short of units: leases that ran out beyond the few ended above may hold some.
    local full = #reply - 2 == 2 * k
    if full or select(2, end_expired_leases(t.keys.leases, now, MORE_EXPIRED)) == 0 then break end
  end
else
  for i = at + 1, at + n_filter do
    if #reply - 2 >= 2 * k then break end
    local raw = redis.call('HGET', t.keys.units, ARGV[i])
    local u = raw and effective(t, cmsgpack.unpack(raw), now)
    if u and u[U_STATUS] == PENDING and (u[U_NODE] == '' or u[U_NODE] == node) then
      if u[U_READY] <= now then
        claim(ARGV[i], cmsgpack.unpack(raw))
      elseif soonest == 0 or u[U_READY] < soonest then
        soonest = u[U_READY]
      end
    end
  end
end
if #reply == 2 and soonest > 0 then reply[1] = math.max(1, soonest - now) end
-- A call that changed nothing is kept for no retry: a retry may as well look again.
if #reply > 2 or #done > 0 then keep_answer(t, request_id, reply) end
return reply
