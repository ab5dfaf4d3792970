-- Completion and the ack barriers (rules 15-20).
-- @requires tasks

-- Nodes in the expected ack set (rule 16) lacking a successful ack for `phase`.
local function missing_acks(t, phase)
  local nodes = redis.call('HKEYS', t.keys.nodes)
  local missing = {}
  for _, node in ipairs(nodes) do
    local raw = redis.call('HGET', t.keys.acks, phase .. ':' .. node)
    if not raw or cmsgpack.unpack(raw)[1] ~= 1 then missing[#missing + 1] = node end
  end
  return missing
end

-- Records when the task's last unit became terminal (rule 15), once.
local function units_finished(t, now)
  redis.call('HSETNX', t.keys.task, 'units_finished_at', now)
end

-- Moves a task whose units are all complete (or whose prepare acks are all in) to its next
-- status; a barrier phase is skipped at once when every expected ack already arrived.
local function advance(t, now)
  if t.status == 'STARTED' and t.barrier == 2 then
    t.status = 'PREPARING'
  elseif t.status == 'STARTED' and t.barrier == 1 then
    t.status = 'SWAPPING'
  elseif t.status == 'STARTED' then
    finish_task(t, 'FINISHED', '', now)
    return
  elseif t.status == 'PREPARING' then
    t.status = 'SWAPPING'
  else
    return
  end
  redis.call('HSET', t.keys.task, 'status', t.status)
  emit(t.keys, 'status', t.id, t.version, 'status', t.status)
  if t.status == 'PREPARING' and #missing_acks(t, 'prepare') == 0 then
    advance(t, now)
  end
end
