-- ping: does nothing but answer, so that a client or an operator can check that this
-- version's library is loaded and callable, and measure what a call costs by itself.
-- KEYS: none (any node of a cluster answers)
-- ARGV: none
-- Returns: "PONG"
-- Errors: none
-- Flags: no-writes (read-only: callable with FCALL_RO, on replicas too)
return 'PONG'
