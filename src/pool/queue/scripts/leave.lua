-- ARGV: events kept, host. The host is no longer live. Returns 1.
redis.call('ZREM', KEYS[13], ARGV[2])
redis.call('HDEL', KEYS[14], ARGV[2])
return 1
