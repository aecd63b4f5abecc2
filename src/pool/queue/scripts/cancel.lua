-- ARGV: the common three, then id. Returns 1 (was queued: removed), 2 (leased: flagged) or 0.
local id = ARGV[4]
if redis.call('ZSCORE', KEYS[1], id) then
  forget(id)
  conclude({event = 'cancelled', id = id}, now_ms())
  return 1
end
if redis.call('ZSCORE', KEYS[2], id) then
  redis.call('SADD', KEYS[8], id)
  return 2
end
return 0
