-- Prepended to every script. KEYS, in this order for all of them:
-- 1 queue (zset id -> score), 2 leases (zset id -> expiry ms), 3 holder (hash id -> host),
-- 4 payload, 5 place (hash id -> score at the first push), 6 attempt, 7 enqueued (ms),
-- 8 cancel (set of ids), 9 counters (hash: pushes, releases), 10 durations (list, newest first),
-- 11 events (stream; each entry's field e is the event as JSON), 12 notes (hash id -> the
-- note of its latest started), 13 hosts (zset host -> announcement expiry ms),
-- 14 capacity (hash host -> announced capacity).
-- ARGV[1] is how many events the stream keeps (about). Numbers go to redis.call as Lua
-- numbers, never through tostring, which keeps only 14 digits.
-- Redis before 7 refuses writes after TIME unless effects are replicated; from 7 on
-- that is the only mode and this is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local SPAN = 17592186044416 -- 2^44: one priority class
local MIDDLE = 8796093022208 -- 2^43: pushes count up from here, releases down
-- Priority names by class + 1, as Priority::as_str has them.
local PRIORITIES = {'critical', 'high', 'medium', 'low'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- On a stream rather than PUBLISH: a host whose connection drops reads on from the
-- last entry it saw when it is back, so it misses none (of the last ARGV[1]).
local function publish(event)
  redis.call('XADD', KEYS[11], 'MAXLEN', '~', tonumber(ARGV[1]), '*', 'e', cjson.encode(event))
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
