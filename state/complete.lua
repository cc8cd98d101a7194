-- Finish closing a window after its window.closed event went out: free everything it held.
-- Refused (0) when another replica's lease is current or the window is already gone.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: member, token, groups (comma separated)
local base = KEYS[1]
local m = ARGV[1]
local token = ARGV[2]
local lease_key = base .. ':lease:' .. m
local holder = redis.call('GET', lease_key)
if holder and holder ~= token then return 0 end
if not redis.call('ZSCORE', base .. ':ready', m) then return 0 end
for g in string.gmatch(ARGV[3], '[^,]+') do
  local dk = base .. ':w:' .. m .. ':' .. g
  redis.call('DEL', dk, dk .. ':c')
end
redis.call('DEL', base .. ':meta:' .. m, lease_key)
redis.call('ZREM', base .. ':ready', m)
return 1
