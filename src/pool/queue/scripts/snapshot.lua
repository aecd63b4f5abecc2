-- ARGV: the common three. Returns {{{id, score, attempt, enqueued}...}, leases, durations,
-- live hosts, their capacity}; forgets lapsed hosts.
local now = now_ms()
prune_hosts(now)
local capacity = 0
for _, c in ipairs(redis.call('HVALS', KEYS[14])) do capacity = capacity + tonumber(c) end
local queued = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #queued, 2 do
  local id = queued[i]
  table.insert(out, {id, queued[i + 1], redis.call('HGET', KEYS[6], id), redis.call('HGET', KEYS[7], id)})
end
return {out, redis.call('ZCARD', KEYS[2]), redis.call('LRANGE', KEYS[10], 0, -1),
  redis.call('ZCARD', KEYS[13]), capacity}
