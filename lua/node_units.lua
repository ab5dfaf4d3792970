-- node_units: the ids of the named units one node owns in one group of a task (any status),
-- in id order: what the node's group callbacks are given. Costs time in those units only.
-- KEYS[1] the task hash "<base>task:<task id>"; the other keys of the task and its
--         partition are derived from it (docs/keys.md)
-- ARGV[1] task id   ARGV[2] version   ARGV[3] node id   ARGV[4] group ("" for the default)
-- Returns: the unit ids (none for a range task, or a node that owns none in that group)
-- Errors: DTQ_INVALID_ARGUMENT, DTQ_TASK_DOES_NOT_EXIST
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)

local task_id = arg_id(ARGV[1], 'task id')
local version = arg_id(ARGV[2], 'version')
local node = arg_id(ARGV[3], 'node id')
local group = ARGV[4]
if type(group) ~= 'string' or #group > 200 or string.find(group, '%c') then
  fail('INVALID_ARGUMENT', 'group is not valid')
end
local t = require_task(task_keys(KEYS, task_id), task_id, version)
local first = node .. '\n' .. group .. '\n'
local members = redis.call('ZRANGE', t.keys.owned, '[' .. first, '(' .. node .. '\n' .. group .. '\011', 'BYLEX')
for i, member in ipairs(members) do members[i] = string.sub(member, #first + 1) end
return members
