-- Read a sealed window's partial aggregates: for every pane of the window, the partials that
-- count for it (written while the window was open: "from" at or before the window's start).
-- Reads O(panes x partials per pane); never instances.
-- KEYS[1] = "{mm:<monitor>}"; ARGV: windowStart, windowEnd, pane
-- Returns a flat list {group, partial, group, partial, ...}
local base = KEYS[1]
local ws = tonumber(ARGV[1])
local we = tonumber(ARGV[2])
local g = tonumber(ARGV[3])
local out = {}
for p = ws, we - 1, g do
  local pane = string.format('%d', p)
  for _, member in ipairs(redis.call('SMEMBERS', base .. ':pe:' .. pane)) do
    local from, group = string.match(member, '^(%-?%d+):(.+)$')
    if tonumber(from) <= ws then
      for _, blob in ipairs(redis.call('LRANGE', base .. ':p:' .. pane .. ':' .. member, 0, -1)) do
        out[#out + 1] = group
        out[#out + 1] = blob
      end
    end
  end
end
return out
