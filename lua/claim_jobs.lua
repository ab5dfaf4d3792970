-- claim_jobs: settles the attempts a node finished, then claims up to `max` ready jobs of one
-- queue partition for it (rules J4-J7, docs/jobs.md): the highest-ranked lane first, where a
-- lane's rank is its priority plus how long its first job has waited (aging, rule J3).
-- KEYS[1] the partition's lanes key ("<base>lanes"); the other keys are derived from it
-- ARGV[1] node id
-- ARGV[2] claimer: "<request id>" or "<process>.<claimer>/<n>" (see calls.claimer_request_id);
--         a retried call gets the jobs its first try claimed
-- ARGV[3] max jobs to claim (0..1000; 0 only settles)
-- ARGV[4] the node's lease ms (1..86400000): how long its claims in this partition last
--         unless renewed, at most (a job with a timeout lasts its timeout + 5 s)
-- ARGV[5..] settle reports: (job id, token, code, delay ms, value) quintuples, code c
--         (completed, value = result), f (failed attempt, value = error; retried after the
--         delay while attempts remain) or F (failed for good)
-- Returns: {settled, jobs, next due}: settled has 1 (accepted) or 0 (turned away: the claim
--          is no longer the job's) per report; jobs has 10 values per claimed job: id, token,
--          handler, arguments, timeout ms (0: none), deadline ms (0), attempt (from 1),
--          failed attempts so far, max attempts, backoff ("" for the default); next due is
--          the ms until the earliest scheduled job is due, -1 if there is none
-- Errors: DTQ_INVALID_ARGUMENT

local q = lanes_keys(KEYS)
local node = arg_id(ARGV[1], 'node id')
local claimer = ARGV[2]
if type(claimer) ~= 'string' or #claimer < 1 or #claimer > 100 then
  fail('INVALID_ARGUMENT', 'claimer must be a request id')
end
local max = arg_int(ARGV[3], 'max jobs', 0, 1000)
local node_lease = arg_int(ARGV[4], 'lease ms', 1, 86400000)
job_settle_args(ARGV, 5)

local WIDTH = 10
local function job_fields(id)
  return redis.call('HMGET', job_key(q, id), 's', 'h', 'a', 't', 'd', 'D', 'f', 'm', 'b', 'l', 'T')
end

-- One claimed job's answer, from its record: id, token, handler, arguments, timeout,
-- deadline, attempt, failures, max attempts, backoff.
local function answer_job(claimed, id, token, f)
  local n = #claimed
  local failures = tonumber(f[7] or '0')
  claimed[n + 1] = id; claimed[n + 2] = token; claimed[n + 3] = f[2]; claimed[n + 4] = f[3]
  claimed[n + 5] = opt_num(f[4]) or 0; claimed[n + 6] = opt_num(f[5]) or 0
  claimed[n + 7] = failures + tonumber(f[10] or '0') + 1; claimed[n + 8] = failures
  claimed[n + 9] = tonumber(f[8] or '1'); claimed[n + 10] = f[9] or ''
end

-- A retry of a call whose reply was lost: its settle reports were applied (a second try of
-- each is turned away by its token), and it must get the same jobs, not new ones. The kept
-- answer is "<claimer>\n<settled: a 0 or 1 per report>\n<id> <token> ..." of the jobs.
local answers_key = q.base .. 'answers'
local slash = string.find(claimer, '/', 1, true)
local who = slash and string.sub(claimer, 1, slash - 1)
local now = now_ms()
if who then
  local kept = redis.call('HGET', answers_key, who)
  if kept and string.sub(kept, 1, #claimer + 1) == claimer .. '\n' then
    local settled_text, jobs_text = string.match(kept, '^[^\n]*\n([01]*)\n(.*)$')
    local settled, claimed = {}, {}
    for k = 1, #settled_text do settled[k] = tonumber(string.sub(settled_text, k, k)) end
    for id, token in string.gmatch(jobs_text, '(%S+) (%d+)') do
      -- A job whose record went meanwhile (cancelled with no result kept) is not answered.
      local f = job_fields(id)
      if f[2] then answer_job(claimed, id, tonumber(token), f) end
    end
    return { settled, claimed, job_next_due(q, now) }
  end
end

local settled = job_settle(q, node, ARGV, 5, now)

local claimed, claims = {}, {}
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
    aging = tonumber(redis.call('HGET', q.base .. 'conf', 'aging') or JOB_DEFAULT_AGING_MS)
    for i = 1, count do head(i) end
  end
  local shortest = node_lease
  while #claimed < WIDTH * max and count > 0 do
    local best = 1
    if count > 1 then
      best = nil
      for i = 1, count do
        if heads[i] and (not best or heads[i].rank > heads[best].rank) then best = i end
      end
      if not best then break end
    end
    local lane = lanes[2 * best - 1]
    local key = lane_key(q, lane)
    local want = count == 1 and max - #claimed / WIDTH or 1
    local ids
    if string.sub(lane, 1, 1) == 'd' then
      local popped = redis.call('ZPOPMIN', key, want)
      ids = {}
      for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
    else
      ids = redis.call('LPOP', key, want) or {}
    end
    if #ids < want or redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', q.lanes, lane)
      if count == 1 then count = 0 else heads[best] = false end
    elseif count > 1 then
      head(best)
    end
    for _, id in ipairs(ids) do
      local f = job_fields(id)
      if f[1] == JOB_QUEUED then
        local deadline = opt_num(f[5])
        if deadline and deadline <= now then
          job_miss_deadline(q, id, now, f[6] == '1', f[11])
        else
          shortest = math.min(shortest, job_lease_ms(opt_num(f[4])))
          answer_job(claimed, id, 0, f)
          claims[#claims + 1] = job_result_ttl(f[11])
        end
      end
    end
  end
  if #claims > 0 then
    -- Tokens come from the partition's counter: one increment for the batch (rule J5).
    local last = redis.call('INCRBY', q.base .. 'seq', #claims)
    local entries, ids = {}, {}
    for k = 1, #claims do
      local token = last - #claims + k
      local id = claimed[(k - 1) * WIDTH + 1]
      claimed[(k - 1) * WIDTH + 2] = token
      ids[k] = id
      entries[2 * k - 1] = id
      entries[2 * k] = token .. ' ' .. node .. ' ' .. now .. ' ' .. claims[k]
    end
    redis.call('HSET', q.running, unpack(entries))
    redis.call('SADD', q.base .. 'held:' .. node, unpack(ids))
    redis.call('ZADD', q.base .. 'nodes', now + shortest, node)
  end
  -- Jobs are left for other workers: pass the wake marker on (rule J8).
  if #claimed == WIDTH * max and redis.call('EXISTS', q.lanes) == 1 then job_wake(q) end
end

if who and #claimed > 0 then
  local kept = { claimer, '\n', table.concat(settled), '\n' }
  for k = 1, #claimed, WIDTH do
    kept[#kept + 1] = claimed[k] .. ' ' .. claimed[k + 1] .. ' '
  end
  if redis.call('HLEN', answers_key) >= 1024 then redis.call('DEL', answers_key) end
  redis.call('HSET', answers_key, who, table.concat(kept))
end
return { settled, claimed, job_next_due(q, now) }
