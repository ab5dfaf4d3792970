-- configure_queue: sets the options of one queue partition that its claims read (rule J3).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] aging ms: what one priority step is worth in waiting time (1..86400000)
-- Returns: 1
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local aging = arg_int(ARGV[1], 'aging ms', 1, 86400000)
redis.call('HSET', (q.base .. 'conf'), 'aging', aging)
return 1
