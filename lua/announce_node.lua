-- announce_node: a worker process says that it runs as a node, for a few seconds; it says so
-- again well before they are over. Two live processes must never share a node id (ownership,
-- sticky units and barrier acks are the node's): the answer names another live process that
-- announced the same id, so that the worker can say so. The announcement of a process that
-- stopped ends with its TTL.
-- KEYS[1] the node's presence key "<prefix>:node:<node id>" (dtaskq/keys.py)
-- ARGV[1] process: an id of the announcing process, unique to it
-- ARGV[2] ttl_ms: how long the announcement lasts (100..600000)
-- Returns: "" when this process holds the node id now, else the process that holds it
-- Errors: DTQ_INVALID_ARGUMENT

local process = arg_id(ARGV[1], 'process')
local ttl_ms = arg_int(ARGV[2], 'ttl_ms', 100, 600000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= process then return holder end
redis.call('SET', KEYS[1], process, 'PX', ttl_ms)
return ''
