-- ARGV: the common three, then host, id, outcome (completed | failed | cancelled), detail,
-- execution ms, samples kept. Returns 1, or 0 when host holds no live lease.
local host, id = ARGV[4], ARGV[5]
local now = now_ms()
if not held(host, id, now) then return 0 end
forget(id)
redis.call('LPUSH', KEYS[10], ARGV[8])
redis.call('LTRIM', KEYS[10], 0, tonumber(ARGV[9]) - 1)
if ARGV[6] == 'cancelled' then
  conclude({event = 'cancelled', id = id}, now)
else
  conclude({event = ARGV[6], id = id, host = host, detail = ARGV[7]}, now)
end
return 1
