-- ARGV: the common three, then id. Returns {'queued', position, attempt}, {'leased', host,
-- attempt}, {'finished', the terminal event as JSON} or {'unknown'}; forgets outdated results.
local id = ARGV[4]
local now = now_ms()
prune_results(now)
local rank = redis.call('ZRANK', KEYS[1], id)
if rank then return {'queued', rank + 1, redis.call('HGET', KEYS[6], id)} end
if redis.call('ZSCORE', KEYS[2], id) then
  return {'leased', redis.call('HGET', KEYS[3], id), redis.call('HGET', KEYS[6], id)}
end
-- One the bounded pruning did not reach yet is as good as forgotten.
local ended = redis.call('ZSCORE', KEYS[16], id)
if ended and tonumber(ended) > now - tonumber(ARGV[2]) then
  local event = redis.call('HGET', KEYS[15], id)
  if event then return {'finished', event} end
end
return {'unknown'}
