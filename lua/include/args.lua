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
