-- The partition's event stream, which tells schedulers what changed (docs/runtime.md).
-- @requires records

-- Each entry is kind, task, version, then the kind's own fields:
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
-- The library outlives its calls, so every call starts afresh (begin_call): nil until needed.
local returned_told = nil

local function begin_call()
  returned_told = nil
end

local function tell_returned(t, node)
  local key = t.id .. '\n' .. node
  returned_told = returned_told or {}
  if returned_told[key] then return end
  returned_told[key] = true
  emit(t.keys, 'returned', t.id, t.version, 'node', node)
end

