-- Replace the first n partials of a pane's list by their merge, if they are still the ones the
-- caller read (a SHA-1 over their lengths and bytes): concurrent compactions cannot lose or
-- double anything, and appends after the first n are kept.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: key suffix, n, sha1, merged partial
local pk = KEYS[1] .. ':p:' .. ARGV[1]
local n = tonumber(ARGV[2])
if redis.call('LLEN', pk) < n then return 0 end
local parts = {}
for _, blob in ipairs(redis.call('LRANGE', pk, 0, n - 1)) do
  parts[#parts + 1] = string.len(blob) .. ':' .. blob
end
if redis.sha1hex(table.concat(parts)) ~= ARGV[3] then return 0 end
redis.call('LTRIM', pk, n, -1)
redis.call('LPUSH', pk, ARGV[4])
return 1
