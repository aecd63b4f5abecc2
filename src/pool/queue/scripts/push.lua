-- ARGV: the common three, then id, payload, class, attempt, limit (-1: none). Returns {0} for
-- a duplicate, {2, queued} when `limit` requests are queued already, else
-- {1, position, length}; publishes queued.
local id = ARGV[4]
if redis.call('HEXISTS', KEYS[4], id) == 1 then return {0} end
local limit = tonumber(ARGV[8])
if limit >= 0 then
  local queued = redis.call('ZCARD', KEYS[1])
  if queued >= limit then return {2, queued} end
end
-- The id is live again: how it ended before is history.
forget_result(id)
local seq = redis.call('HINCRBY', KEYS[9], 'pushes', 1)
local place = tonumber(ARGV[6]) * SPAN + MIDDLE + seq
redis.call('ZADD', KEYS[1], place, id)
redis.call('HSET', KEYS[4], id, ARGV[5])
redis.call('HSET', KEYS[5], id, place)
redis.call('HSET', KEYS[6], id, ARGV[7])
redis.call('HSET', KEYS[7], id, now_ms())
publish({event = 'queued', id = id, priority = PRIORITIES[tonumber(ARGV[6]) + 1]})
return {1, redis.call('ZRANK', KEYS[1], id) + 1, redis.call('ZCARD', KEYS[1])}
