-- list_summaries: a page of the tasks of one partition as one node's scheduler sees them, in
-- id order: what its periodic resync needs, in time that grows with the tasks, not their units.
-- KEYS[1] the partition's task index ("<base>tasks"); the tasks' keys are derived from it
-- ARGV[1] node id   ARGV[2] cursor: the last task id of the previous page, "" for the first
-- ARGV[3] page size (1..1000)
-- Returns: {cursor, summaries}: cursor the ARGV[2] of the next page, "" after the last;
--          summaries flat quintuples (task id, version, status, claimable 1 | 0, owner 1 | 0),
--          owner when the node owns units of the task (it is in its expected ack set)
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)

local node = arg_id(ARGV[1], 'node id')
local start = '-'
if ARGV[2] ~= '' then start = '(' .. arg_id(ARGV[2], 'cursor') end
local count = arg_int(ARGV[3], 'page size', 1, 1000)
local ids = redis.call('ZRANGE', KEYS[1], start, '+', 'BYLEX', 'LIMIT', 0, count)
local page = {}
local now = now_ms()
for _, task_id in ipairs(ids) do
  local t = load_task(partition_task_keys(KEYS[1], 'tasks', task_id), task_id, '')
  if t then
    page[#page + 1] = task_id
    page[#page + 1] = t.version
    page[#page + 1] = t.status
    page[#page + 1] = claimable(t, node, now) and 1 or 0
    page[#page + 1] = redis.call('HEXISTS', t.keys.nodes, node)
  end
end
return { #ids == count and ids[#ids] or '', page }
