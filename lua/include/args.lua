-- Argument checks and small conversions every operation uses. A rejected call fails before
-- its first write, so these run first.

-- Raising a table carries our error text through nested calls; the client strips the
-- location suffix the server appends.
local function fail(code, message)
  error({ err = 'DTQ_' .. code .. ' ' .. message })
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Only canonical decimal text: tonumber alone would also take "1e1", "0x2", "nan" or "007",
-- and round digits past 2^53 (a check only the longest numbers need).
local function arg_int(value, name, min, max)
  local n = type(value) == 'string' and (string.find(value, '^-?[1-9]%d*$') or value == '0')
    and tonumber(value)
  if not n or n < min or n > max or (#value > 15 and string.format('%.0f', n) ~= value) then
    fail('INVALID_ARGUMENT', name .. ' must be an integer in [' .. min .. ', ' .. max .. ']')
  end
  return n
end

-- Ids of tasks, units, nodes and conflict keys: 1-200 bytes, no braces, whitespace or
-- control characters (keys embed them, and lease members join them with a newline).
local function arg_id(value, name)
  if type(value) ~= 'string' or #value < 1 or #value > 200 or string.find(value, '[%c%s{}]') then
    fail('INVALID_ARGUMENT', name .. ' is not a valid id')
  end
  return value
end

local function arg_token(value)
  if value == '' then return nil end
  return arg_int(value, 'token', 0, 9007199254740992)
end

-- Decimal text of an integer up to 2^53; `..` would print it with 14 significant digits.
local function int(n)
  return string.format('%.0f', n)
end

-- The ARGV of a sweep (sweep, sweep_jobs): a limit of items, then a sweeper and the ms it
-- takes the partition's sweep lock for ("" and 0: no lock).
local function sweep_args(ARGV)
  local limit = arg_int(ARGV[1], 'limit', 1, 10000)
  local sweeper = ARGV[2]
  local lock_ms = arg_int(ARGV[3], 'lock ms', 0, 60000)
  if sweeper ~= '' then
    arg_id(sweeper, 'sweeper')
    if lock_ms == 0 then fail('INVALID_ARGUMENT', 'a sweeper takes the lock for 1 to 60000 ms') end
  elseif lock_ms ~= 0 then
    fail('INVALID_ARGUMENT', 'the lock needs a sweeper')
  end
  return limit, sweeper, lock_ms
end

-- Takes a partition's sweep lock `lock` for `sweeper`; false when another sweeper holds it.
-- Never released: it runs out, so that a sweeper that dies holds it no longer than that.
local function take_sweep_lock(lock, sweeper, lock_ms)
  return sweeper == '' or redis.call('SET', lock, sweeper, 'NX', 'PX', lock_ms)
    or redis.call('GET', lock) == sweeper
end
