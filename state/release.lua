-- Give a claimed window back (its event could not be sent): the next claim retries it.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: member, token
local lease_key = KEYS[1] .. ':lease:' .. ARGV[1]
if redis.call('GET', lease_key) == ARGV[2] then return redis.call('DEL', lease_key) end
return 0
