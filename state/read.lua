-- Read a sealed window's partial aggregates: for every pane of the window, the partials that
-- count for it (written while the window was open: "from" at or before the window's start), one
-- per replica that wrote the slot. Reads O(panes x replicas); never instances.
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
      -- one aggregate per replica, in the order of the replicas' tokens (a fixed merge order)
      local flat = redis.call('HGETALL', base .. ':p:' .. pane .. ':' .. member)
      local tokens, blobs = {}, {}
      for i = 1, #flat, 2 do
        tokens[#tokens + 1] = flat[i]
        blobs[flat[i]] = flat[i + 1]
      end
      table.sort(tokens)
      for _, token in ipairs(tokens) do
        out[#out + 1] = group
        out[#out + 1] = blobs[token]
      end
    end
  end
end
return out
