-- ARGV: the common three, then host, id, detail. Returns 1, or 0 when host holds no live lease.
-- The detail becomes the request's note (kept across lapse and release, dropped by
-- forget) and goes out in a started event with the current attempt.
local host, id = ARGV[4], ARGV[5]
if not held(host, id, now_ms()) then return 0 end
redis.call('HSET', KEYS[12], id, ARGV[6])
publish({event = 'started', id = id, host = host, attempt = tonumber(redis.call('HGET', KEYS[6], id)),
  detail = ARGV[6]})
return 1
