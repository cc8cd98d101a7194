-- Processing-time tick: a monitor that has received nothing for idleTimeout gets its watermark
-- advanced with processing time (W = maxT + (now - lastArrival) - delay), so quiet streams
-- still close their windows. With flush = 1 (end of a replay) every open window is sealed.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: now, idleTimeoutMs, delay, flush
-- Returns {watermark|"", readyCount}
local base = KEYS[1]
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local delay = tonumber(ARGV[3])
local flush = ARGV[4] == '1'
local wm_key = base .. ':wm'
local open_key = base .. ':open'
local st = redis.call('HMGET', wm_key, 'maxT', 'W', 'lastArr', 'late')
local maxT, W, last, late = tonumber(st[1]), tonumber(st[2]), tonumber(st[3]), tonumber(st[4]) or 0
local limit = nil
if flush then
  limit = '+inf'
elseif maxT ~= nil and last ~= nil and now - last >= idle then
  local wi = maxT + (now - last) - delay
  if W == nil or wi > W then
    W = wi
    redis.call('HSET', wm_key, 'W', string.format('%d', W))
    limit = W
  end
end
if limit ~= nil then
  local ready = redis.call('ZRANGEBYSCORE', open_key, '-inf', limit)
  for _, m in ipairs(ready) do
    local e = tonumber(string.match(m, ':(%-?%d+)$'))
    redis.call('ZREM', open_key, m)
    redis.call('ZADD', base .. ':ready', e, m)
    redis.call('HSET', base .. ':meta:' .. m, 'late', late, 'wm', W and string.format('%d', W) or '')
    late = 0
  end
  redis.call('HSET', wm_key, 'late', late)
end
return {W and string.format('%d', W) or '', redis.call('ZCARD', base .. ':ready')}
