-- dead_jobs: lists a queue partition's dead-letter set, oldest first (rule J6).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] how many entries to skip, ARGV[2] the most to answer (1..10000)
-- Returns: {seen, entries}: how many entries of the set were looked at (fewer than asked:
--          the end of the set), and per entry whose record exists {job id, failed at ms,
--          handler, error, failed attempts}
-- Errors: DTQ_INVALID_ARGUMENT
-- Flags: no-writes

local q = lanes_keys(KEYS)
local skip = arg_int(ARGV[1], 'offset', 0, 9007199254740992)
local count = arg_int(ARGV[2], 'count', 1, 10000)
local entries = redis.call('ZRANGE', q.base .. 'dead', skip, skip + count - 1, 'WITHSCORES')
local answer = {}
for i = 1, #entries, 2 do
  local f = redis.call('HMGET', job_key(q, entries[i]), 'h', 'x', 'f')
  if f[1] then
    answer[#answer + 1] = { entries[i], tonumber(entries[i + 1]), f[1], f[2] or '', tonumber(f[3] or '0') }
  end
end
return { #entries / 2, answer }
