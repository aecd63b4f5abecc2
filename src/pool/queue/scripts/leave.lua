-- ARGV: the common three, then host. The host is no longer live. Returns 1.
redis.call('ZREM', KEYS[13], ARGV[4])
redis.call('HDEL', KEYS[14], ARGV[4])
return 1
