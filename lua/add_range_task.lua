-- add_range_task: creates a task of N range units 0..N-1, or a new version of a terminal
-- task (rules 1-5), pre-split into min(W, N) fresh regions of near-equal size, the first
-- N mod W one unit longer (docs/ranges.md). O(W) time and memory, whatever N.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1 .. 10+C] as add_task: task id, payload, lease_ms, on_lease_expiry, max_attempts,
--         retry_backoff_ms, completed_ttl_ms, barrier, request id, C, conflict keys
-- ARGV[11+C] unit count N (1 .. 2^53)   ARGV[12+C] workers hint W (<= 100000; <= 0 means 1)
-- Events: added
-- Returns: the new version (integer)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_EXISTS, DTQ_TASK_CONFLICT

local o, next_arg = creation_args(ARGV)
local keys = task_keys(KEYS, o.task_id)
if #ARGV ~= next_arg + 1 then fail('INVALID_ARGUMENT', 'expected the unit count and workers hint last') end
local n = arg_int(ARGV[next_arg], 'unit_count', 1, 2 ^ 53)
local w = arg_int(ARGV[next_arg + 1], 'workers_hint', -2 ^ 53, 100000)
local retried = check_creation(keys, o)
if retried then return retried end

-- All checks passed; from here on the script writes.
local version = create_task(keys, o, n, n)
local t = { id = o.task_id, keys = keys }
local regions = math.min(math.max(w, 1), n)
local size = math.floor(n / regions)
if size * regions > n then size = size - 1 end -- the quotient of doubles may round up
local longer = n - size * regions
local start = 0
for i = 0, regions - 1 do
  local len = size + (i < longer and 1 or 0)
  add_span(t, start, start + len, '')
  start = start + len
end
emit(keys, 'added', o.task_id, version)
return version
