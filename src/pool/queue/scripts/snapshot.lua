-- ARGV: events kept (unused). Returns {{{id, score, attempt, enqueued}...}, leases, durations}.
local queued = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #queued, 2 do
  local id = queued[i]
  table.insert(out, {id, queued[i + 1], redis.call('HGET', KEYS[6], id), redis.call('HGET', KEYS[7], id)})
end
return {out, redis.call('ZCARD', KEYS[2]), redis.call('LRANGE', KEYS[10], 0, -1)}
