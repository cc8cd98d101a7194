-- Finish closing a window after its window.closed event went out: free what it held, and every
-- pane no open or sealed window needs any more (a pane is shared by the windows containing it).
-- Refused (0) when another replica's lease is current or the window is already gone.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: member, token, duration, slide, pane
local base = KEYS[1]
local m = ARGV[1]
local token = ARGV[2]
local d = tonumber(ARGV[3])
local s = tonumber(ARGV[4])
local g = tonumber(ARGV[5])
local lease_key = base .. ':lease:' .. m
local holder = redis.call('GET', lease_key)
if holder and holder ~= token then return 0 end
if not redis.call('ZSCORE', base .. ':ready', m) then return 0 end
redis.call('DEL', base .. ':meta:' .. m, base .. ':res:' .. m, lease_key)
redis.call('ZREM', base .. ':ready', m)
local ws, we = string.match(m, '^(%-?%d+):(%-?%d+)$')
ws, we = tonumber(ws), tonumber(we)
for p = ws, we - 1, g do
  -- The windows containing pane p end in (p, last end]; all of them are open or sealed until closed.
  local last_end = math.floor(p / s) * s + d
  local lo, hi = '(' .. string.format('%d', p), string.format('%d', last_end)
  if redis.call('ZCOUNT', base .. ':open', lo, hi) == 0 and redis.call('ZCOUNT', base .. ':ready', lo, hi) == 0 then
    local pane = string.format('%d', p)
    local pe = base .. ':pe:' .. pane
    for _, member in ipairs(redis.call('SMEMBERS', pe)) do
      redis.call('DEL', base .. ':p:' .. pane .. ':' .. member, base .. ':pv:' .. pane .. ':' .. member)
    end
    redis.call('DEL', pe)
  end
end
return 1
