-- register_namespace: fixes a namespace's partition count at first use (docs/keys.md).
-- KEYS[1] namespace registry hash (namespace -> partition count)
-- ARGV[1] namespace
-- ARGV[2] partition count wanted at first use (1..1024); 0 only looks the namespace up
-- Returns: the namespace's partition count (the stored one when it was registered before),
--          0 for an unknown namespace that was only looked up
-- Errors: DTQ_INVALID_ARGUMENT

local ns = ARGV[1]
if type(ns) ~= 'string' or #ns < 1 or #ns > 64 or string.find(ns, '[^%w_.-]') then
  fail('INVALID_ARGUMENT', 'namespace must be 1-64 characters of [A-Za-z0-9_.-]')
end
local partitions = arg_int(ARGV[2], 'partitions', 0, 1024)
if partitions > 0 then redis.call('HSETNX', KEYS[1], ns, partitions) end
return tonumber(redis.call('HGET', KEYS[1], ns) or '0')
