-- Unit records and statuses, shared by every operation.

local PENDING, IN_PROGRESS, COMPLETED, FAILED = 0, 1, 2, 3

-- Unit records are msgpack arrays; these are their 1-based slots.
local U_STATUS, U_GROUP, U_NODE, U_PROGRESS, U_ATTEMPT = 1, 2, 3, 4, 5
local U_UPDATED, U_FINISHED, U_ERROR, U_LEASE, U_READY = 6, 7, 8, 9, 10

local ACTIVE = { STARTED = true, PREPARING = true, SWAPPING = true }

local function copy(u)
  local c = {}
  for i = 1, 10 do c[i] = u[i] end
  return c
end

