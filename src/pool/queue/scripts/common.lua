-- Prepended to every script. KEYS, in this order for all of them:
-- 1 queue (zset id -> score), 2 leases (zset id -> expiry ms), 3 holder (hash id -> host),
-- 4 payload, 5 place (hash id -> score at the first push), 6 attempt, 7 enqueued (ms),
-- 8 cancel (set of ids), 9 counters (hash: pushes, releases), 10 durations (list, newest first),
-- 11 events (stream; each entry's field e is the event as JSON), 12 notes (hash id -> the
-- note of its latest started), 13 hosts (zset host -> announcement expiry ms),
-- 14 capacity (hash host -> announced capacity), 15 results (hash id -> the terminal event
-- of an ended request, as JSON), 16 ended (zset id -> when it ended, ms).
-- ARGV, the common three: 1 how many events the stream keeps (about), 2 how long ended
-- requests' results are kept (ms), 3 how many are kept at most. A script's own arguments
-- follow. Numbers go to redis.call as Lua numbers, never through tostring, which keeps
-- only 14 digits.
-- Redis before 7 refuses writes after TIME unless effects are replicated; from 7 on
-- that is the only mode and this is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local SPAN = 17592186044416 -- 2^44: one priority class
local MIDDLE = 8796093022208 -- 2^43: pushes count up from here, releases down
-- Priority names by class + 1, as Priority::as_str has them.
local PRIORITIES = {'critical', 'high', 'medium', 'low'}
-- Outdated results one script forgets at most (RESULTS_PRUNED_PER_CALL).
local PRUNED_PER_CALL = 100

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- On a stream rather than PUBLISH: a host whose connection drops reads on from the
-- last entry it saw when it is back, so it misses none (of the last ARGV[1]).
-- Returns the event as JSON.
local function publish(event)
  local json = cjson.encode(event)
  redis.call('XADD', KEYS[11], 'MAXLEN', '~', tonumber(ARGV[1]), '*', 'e', json)
  return json
end

local function forget_result(id)
  redis.call('HDEL', KEYS[15], id)
  redis.call('ZREM', KEYS[16], id)
end

-- Forgets, oldest first and at most PRUNED_PER_CALL, the results older than ARGV[2] ms
-- (ended at or before now - ARGV[2]) and those beyond the newest ARGV[3].
local function prune_results(now)
  local old = redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, PRUNED_PER_CALL)
  for _, id in ipairs(old) do forget_result(id) end
  local budget = PRUNED_PER_CALL - #old
  local over = redis.call('ZCARD', KEYS[16]) - tonumber(ARGV[3])
  if over > 0 and budget > 0 then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[16], 0, math.min(over, budget) - 1)) do forget_result(id) end
  end
end

-- Publishes the terminal event of a request that ended now and keeps it as its result.
local function conclude(event, now)
  redis.call('HSET', KEYS[15], event.id, publish(event))
  redis.call('ZADD', KEYS[16], now, event.id)
  prune_results(now)
end

-- Whether host holds a lease on id that has not lapsed by now.
local function held(host, id, now)
  local expires = redis.call('ZSCORE', KEYS[2], id)
  return expires and tonumber(expires) > now and redis.call('HGET', KEYS[3], id) == host
end

local function forget(id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  for k = 3, 7 do redis.call('HDEL', KEYS[k], id) end
  redis.call('SREM', KEYS[8], id)
  redis.call('HDEL', KEYS[12], id)
end

-- Drops the hosts whose announcement lapsed by now.
local function prune_hosts(now)
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[13], '-inf', now)
  for _, host in ipairs(lapsed) do
    redis.call('ZREM', KEYS[13], host)
    redis.call('HDEL', KEYS[14], host)
  end
end
