-- list_namespaces: the namespace registry.
-- KEYS[1] namespace registry hash (namespace -> partition count)
-- Returns: flat array of namespace, partition count
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)
-- Errors: none
return redis.call('HGETALL', KEYS[1])
