-- Admit the segments of a batch of requests, in order (modelmonitor.core.segments.SegmentAdmission
-- is the same rule in process): a watched segment stays watched and its newest event time moves
-- up; a new one takes a free slot, freeing first the slots of segments whose newest event time is
-- more than the retention older than the newest of all (the request's included).
-- KEYS[1] = "{mm:<monitor>}"; ARGV: maxSegments, retentionMs, n, then n pairs (segment, eventTimeMs)
-- Returns one 1 (admitted) or 0 (excess) per request.
local key = KEYS[1] .. ':segments'
local max_segments = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
for i = 1, n do
  local segment = ARGV[2 + 2 * i]
  local t = tonumber(ARGV[3 + 2 * i])
  local score = redis.call('ZSCORE', key, segment)
  if score then
    if t > tonumber(score) then redis.call('ZADD', key, string.format('%d', t), segment) end
    out[i] = 1
  else
    if redis.call('ZCARD', key) >= max_segments then
      local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      local newest = math.max(tonumber(top[2]), t)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%d', newest - retention))
    end
    if redis.call('ZCARD', key) < max_segments then
      redis.call('ZADD', key, string.format('%d', t), segment)
      out[i] = 1
    else
      out[i] = 0
    end
  end
end
return out
