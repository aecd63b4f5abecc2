-- ARGV: the common three, then host, id, lease ms. Returns {held, cancel requested} as 0/1.
local now = now_ms()
local cancel = redis.call('SISMEMBER', KEYS[8], ARGV[5])
if held(ARGV[4], ARGV[5], now) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[5])
  return {1, cancel}
end
return {0, cancel}
