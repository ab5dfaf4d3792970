-- claim_jobs: settles the attempts a node finished, then claims up to `max` ready jobs of one
-- queue partition for it (rules J4-J7, docs/jobs.md): the highest-ranked lane first, where a
-- lane's rank is its priority plus how long its first job has waited (aging, rule J3).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id
-- ARGV[2] claimer: "<request id>" or "<process>.<claimer>/<n>" (see calls.claimer_request_id);
--         a retried call gets the jobs its first try claimed
-- ARGV[3] max jobs to claim (0..1000; 0 only settles)
-- ARGV[4..] settle reports: (job id, token, code, delay ms, value) quintuples, code c
--         (completed, value = result), f (failed attempt, value = error; retried after the
--         delay while attempts remain) or F (failed for good)
-- Returns: {settled, jobs, next due}: settled has 1 (accepted) or 0 (turned away: the claim
--          is no longer the job's) per report; jobs has 9 values per claimed job: id, token,
--          handler, arguments, timeout ms (0: none), deadline ms (0), failed attempts so far,
--          max attempts, backoff ("" for the default); next due is the ms until the earliest
--          scheduled job is due, -1 if there is none
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = arg_id(ARGV[1], 'node id')
local claimer = ARGV[2]
if type(claimer) ~= 'string' or #claimer < 1 or #claimer > 100 then
  fail('INVALID_ARGUMENT', 'claimer must be a request id')
end
local max = arg_int(ARGV[3], 'max jobs', 0, 1000)
job_settle_args(ARGV, 4)

-- A retry of a call whose reply was lost: its settle reports were applied (a second try of
-- each is turned away by its token), and it must get the same jobs, not new ones.
local slash = string.find(claimer, '/', 1, true)
local who = slash and string.sub(claimer, 1, slash - 1)
if who then
  local kept = redis.call('HGET', q.answers, who)
  if kept then
    local answer = cmsgpack.unpack(kept)
    if answer[1] == claimer then return answer[2] end
  end
end

local now = now_ms()
local settled = {}
for i = 4, #ARGV, 5 do
  local ok = job_settle(q, node, ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2],
    tonumber(ARGV[i + 3]), ARGV[i + 4], now)
  settled[#settled + 1] = ok and 1 or 0
end

local claimed = {}
if max > 0 then
  job_promote(q, now, math.max(max, 100))
  local lanes = redis.call('ZRANGE', q.lanes, 0, -1, 'REV', 'WITHSCORES')
  local aging
  -- The head of each lane, with its rank; read once, then again for the lane that gave one.
  local heads = {}
  local function head(i)
    local lane = lanes[2 * i - 1]
    local key = lane_key(q, lane)
    local id
    if string.sub(lane, 1, 1) == 'd' then
      id = redis.call('ZRANGE', key, 0, 0)[1]
    else
      id = redis.call('LINDEX', key, 0)
    end
    if not id then
      heads[i] = false
      return
    end
    local enqueued = tonumber(redis.call('HGET', job_key(q, id), 'e') or now)
    heads[i] = { id = id, key = key, rank = tonumber(lanes[2 * i]) * aging / 2 + now - enqueued }
  end
  local count = #lanes / 2
  if count > 1 then
    aging = tonumber(redis.call('HGET', q.conf, 'aging') or JOB_DEFAULT_AGING_MS)
    for i = 1, count do head(i) end
  end
  while #claimed < 9 * max and count > 0 do
    local best = 1
    if count > 1 then
      best = nil
      for i = 1, count do
        if heads[i] and (not best or heads[i].rank > heads[best].rank) then best = i end
      end
      if not best then break end
    end
    local lane, key = lanes[2 * best - 1], lane_key(q, lanes[2 * best - 1])
    local ids
    if string.sub(lane, 1, 1) == 'd' then
      local popped = redis.call('ZPOPMIN', key, count == 1 and max - #claimed / 9 or 1)
      ids = {}
      for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
    elseif count == 1 then
      ids = redis.call('LPOP', key, max - #claimed / 9) or {}
    else
      ids = { redis.call('LPOP', key) }
    end
    if #ids == 0 or redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', q.lanes, lane)
      if count == 1 then count = 0 else heads[best] = false end
    elseif count > 1 then
      head(best)
    end
    for _, id in ipairs(ids) do
      local jkey = job_key(q, id)
      local f = redis.call('HMGET', jkey, 's', 'h', 'a', 't', 'd', 'D', 'f', 'm', 'b', 'n', 'T', 'W')
      if f[1] == JOB_QUEUED then
        local deadline = opt_num(f[5])
        if deadline and deadline <= now then
          job_miss_deadline(q, id, now, f[6] == '1', f[11], f[12] ~= false)
        else
          local timeout, token = opt_num(f[4]), tonumber(f[10] or '0') + 1
          redis.call('HSET', jkey, 's', JOB_RUNNING, 'n', token, 'w', node, 'S', now)
          redis.call('ZADD', q.leases, now + job_lease_ms(timeout), id)
          local n = #claimed
          claimed[n + 1] = id; claimed[n + 2] = token; claimed[n + 3] = f[2]
          claimed[n + 4] = f[3]; claimed[n + 5] = timeout or 0; claimed[n + 6] = deadline or 0
          claimed[n + 7] = tonumber(f[7] or '0'); claimed[n + 8] = tonumber(f[8] or '1')
          claimed[n + 9] = f[9] or ''
        end
      end
    end
  end
  -- Jobs are left for other workers: pass the wake marker on (rule J8).
  if #claimed == 9 * max and redis.call('EXISTS', q.lanes) == 1 then job_wake(q) end
end

local answer = { settled, claimed, job_next_due(q, now) }
if who and #claimed > 0 then
  if redis.call('HLEN', q.answers) >= 1024 then redis.call('DEL', q.answers) end
  redis.call('HSET', q.answers, who, cmsgpack.pack({ claimer, answer }))
end
return answer
