-- ARGV: events kept, host, id, outcome (completed | failed | cancelled), detail,
-- execution ms, samples kept. Returns 1, or 0 when host holds no live lease.
local host, id = ARGV[2], ARGV[3]
if not held(host, id, now_ms()) then return 0 end
forget(id)
redis.call('LPUSH', KEYS[10], ARGV[6])
redis.call('LTRIM', KEYS[10], 0, tonumber(ARGV[7]) - 1)
if ARGV[4] == 'cancelled' then
  publish({event = 'cancelled', id = id})
else
  publish({event = ARGV[4], id = id, host = host, detail = ARGV[5]})
end
return 1
