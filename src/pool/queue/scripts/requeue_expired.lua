-- ARGV: the common three, then max attempts. Returns {{id, host, fate, attempt}...}, oldest expiry
-- first; fate is requeued (attempt: the next), failed (attempt: those made) or cancelled.
local max = tonumber(ARGV[4])
local out = {}
local now = now_ms()
prune_results(now)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local host = redis.call('HGET', KEYS[3], id) or ''
  local attempt = tonumber(redis.call('HGET', KEYS[6], id)) or 0
  if redis.call('SISMEMBER', KEYS[8], id) == 1 then
    forget(id)
    conclude({event = 'cancelled', id = id}, now)
    table.insert(out, {id, host, 'cancelled', attempt})
  elseif attempt >= max then
    forget(id)
    conclude({event = 'failed', id = id,
      detail = 'gave up after ' .. attempt .. ' attempts: the lease of host ' .. host .. ' lapsed'}, now)
    table.insert(out, {id, host, 'failed', attempt})
  else
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HSET', KEYS[6], id, attempt + 1)
    redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[5], id), id)
    publish({event = 'requeued', id = id, attempt = attempt + 1})
    table.insert(out, {id, host, 'requeued', attempt + 1})
  end
end
return out
