-- Key names derived inside the functions from the one key a call passes, so that every key a
-- call touches stays in that key's slot. docs/keys.md and dtaskq/keys.py describe the layout;
-- a test proves that both agree.
-- @requires args

-- Every key of task `task_id`, from a key of its partition that ends in `suffix`.
local function partition_task_keys(key, suffix, task_id)
  local base = string.sub(key, 1, #key - #suffix)
  return {
    task = base .. 'task:' .. task_id, units = base .. 'units:' .. task_id,
    acks = base .. 'acks:' .. task_id, nodes = base .. 'nodes:' .. task_id,
    leases = base .. 'leases', expiry = base .. 'expiry', conflicts = base .. 'conflicts',
    index = base .. 'tasks', seq = base .. 'seq',
    spans = base .. 'spans:' .. task_id, order = base .. 'order:' .. task_id,
    returned = base .. 'returned:' .. task_id, kept = base .. 'kept:' .. task_id,
    done = base .. 'done:' .. task_id, events = base .. 'events',
    cleaned = base .. 'cleaned:' .. task_id, pending = base .. 'pending:' .. task_id,
    owned = base .. 'owned:' .. task_id, groups = base .. 'groups:' .. task_id,
    answers = base .. 'answers:' .. task_id,
  }
end

-- The keys of a task operation, from its KEYS[1]: the task hash `<base>task:<task id>`.
local function task_keys(KEYS, task_id)
  local key, suffix = KEYS[1], 'task:' .. task_id
  if #key <= #suffix or string.sub(key, -#suffix) ~= suffix then
    fail('INVALID_ARGUMENT', 'KEYS[1] must be the task hash of task ' .. task_id)
  end
  return partition_task_keys(key, suffix, task_id)
end
