-- ARGV: the common three, then host, id, note ('' to keep the request's note). Returns 1, or 0
-- when host holds no live lease. A request released with a cancel pending is cancelled instead;
-- otherwise it publishes queued.
local host, id = ARGV[4], ARGV[5]
local now = now_ms()
if not held(host, id, now) then return 0 end
if redis.call('SISMEMBER', KEYS[8], id) == 1 then
  forget(id)
  conclude({event = 'cancelled', id = id}, now)
  return 1
end
redis.call('ZREM', KEYS[2], id)
redis.call('HDEL', KEYS[3], id)
if ARGV[6] ~= '' then redis.call('HSET', KEYS[12], id, ARGV[6]) end
local n = redis.call('HINCRBY', KEYS[9], 'releases', 1)
local class = math.floor(tonumber(redis.call('HGET', KEYS[5], id)) / SPAN)
redis.call('ZADD', KEYS[1], class * SPAN + MIDDLE - n, id)
publish({event = 'queued', id = id, priority = PRIORITIES[class + 1]})
return 1
