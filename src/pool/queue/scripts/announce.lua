-- ARGV: the common three, then host, capacity, ttl ms. The host is live until now + ttl, with that
-- capacity (announcing again refreshes both); lapsed hosts are forgotten. Returns 1.
local now = now_ms()
prune_hosts(now)
redis.call('ZADD', KEYS[13], now + tonumber(ARGV[6]), ARGV[4])
redis.call('HSET', KEYS[14], ARGV[4], ARGV[5])
return 1
