-- Claim sealed windows for closing, earliest end first, each under a lease: a replica that
-- dies while closing leaves the window to whoever claims it after the lease expires.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: leaseMs, token, max
-- Returns a flat list {member, late, watermark, member, late, watermark, ...}
local base = KEYS[1]
local lease_ms = tonumber(ARGV[1])
local token = ARGV[2]
local max = tonumber(ARGV[3])
local out = {}
local ready = redis.call('ZRANGEBYSCORE', base .. ':ready', '-inf', '+inf', 'LIMIT', 0, max)
for _, m in ipairs(ready) do
  if redis.call('SET', base .. ':lease:' .. m, token, 'NX', 'PX', lease_ms) then
    local meta = redis.call('HMGET', base .. ':meta:' .. m, 'late', 'wm')
    out[#out + 1] = m
    out[#out + 1] = meta[1] or '0'
    out[#out + 1] = meta[2] or ''
  end
end
return out
