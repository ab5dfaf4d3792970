-- list_tasks: a page of the task ids of one partition, in id order.
-- KEYS[1] task index
-- ARGV[1] cursor: the last id of the previous page, or "" for the first page
-- ARGV[2] page size (1..1000)
-- Returns: up to that many task ids after the cursor
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)
-- Errors: DTQ_INVALID_ARGUMENT

local count = arg_int(ARGV[2], 'page size', 1, 1000)
local start = '-'
if ARGV[1] ~= '' then start = '(' .. arg_id(ARGV[1], 'cursor') end
return redis.call('ZRANGE', KEYS[1], start, '+', 'BYLEX', 'LIMIT', 0, count)
