-- Fix a window's closed event before it is emitted: the first closer stores it; a closer that
-- replaces a dead one finds it and emits the identical event (same data, same closedAtMs).
-- The lease is renewed here, so a close is never taken over between computing and emitting.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: member, token, event (or "" to only look), leaseMs
-- Returns {1, event} (the event to emit) or {0, ""} (the lease is someone else's: do not emit)
local base = KEYS[1]
local m = ARGV[1]
local lease_key = base .. ':lease:' .. m
if redis.call('GET', lease_key) ~= ARGV[2] then return {0, ''} end
redis.call('PEXPIRE', lease_key, tonumber(ARGV[4]))
local res_key = base .. ':res:' .. m
local stored = redis.call('GET', res_key)
if stored then return {1, stored} end
if ARGV[3] == '' then return {1, ''} end
redis.call('SET', res_key, ARGV[3])
return {1, ARGV[3]}
