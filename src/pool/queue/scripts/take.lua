-- ARGV: the common three, then host, lease ms. Returns {} when empty, else
-- {id, payload, place, attempt, enqueued, expires[, note]} (no note: six items).
local first = redis.call('ZRANGE', KEYS[1], 0, 0)
if #first == 0 then return {} end
local id = first[1]
local expires = now_ms() + tonumber(ARGV[5])
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], expires, id)
redis.call('HSET', KEYS[3], id, ARGV[4])
local attempt = redis.call('HGET', KEYS[6], id)
publish({event = 'allocated', id = id, host = ARGV[4], attempt = tonumber(attempt)})
local out = {id, redis.call('HGET', KEYS[4], id), redis.call('HGET', KEYS[5], id), attempt,
  redis.call('HGET', KEYS[7], id), expires}
local note = redis.call('HGET', KEYS[12], id)
if note then table.insert(out, note) end
return out
