-- Apply one group-committed batch of instance requests to a monitor's panes, atomically:
-- dedup, lateness, watermark, sealing and the replica's pane aggregates in one step.
-- KEYS[1] = the monitor's key prefix "{mm:<monitor>}" (one hash tag: Redis Cluster safe)
-- ARGV: duration, slide, pane, delay, now, dedupBucketMs, dedupBuckets, dedupTtlMs,
--       dedup keys (JSON array of strings), event times and instances per request (little-endian
--       doubles; "" when every request holds one instance), expected statuses ("s1;s2;..."),
--       replica token, then triples (slot suffix "<pane>:<from>:<group>", expected version,
--       the replica's new aggregate of that slot)
-- A status is "" (on time for every window containing it), "dup", "L" (late for every window
-- containing it) or the start of the first window it is on time for ("<from>": it counts for that
-- window and every later one containing it, and was late for the earlier ones).
-- A slot K:p:<suffix> is a hash: one field per replica token, holding the merge of everything that
-- replica applied to it (so a pane holds one aggregate per writing replica, whatever the number
-- of instances); K:pv:<suffix> holds each replica's version of its field. The caller sends the
-- version its aggregate was built on; the script checks it, so a replica whose view is stale
-- (a reply it never received, a Redis that lost data) re-reads instead of overwriting.
-- The script first computes the real statuses and checks the versions without writing anything;
-- if the statuses differ (a redelivery it could not know of, another replica moved the
-- watermark) it answers "conflict" with them, if a version differs "stale" with those slots,
-- and writes nothing. Otherwise it writes, and no write can fail after the first one (Redis
-- refuses an out-of-memory script only at its first write).
-- Returns {watermark|"", maxEventTime|"", readyCount, statuses|"", "ok"|"conflict"|"stale", stale slots}
local base = KEYS[1]
local d = tonumber(ARGV[1])
local s = tonumber(ARGV[2])
local delay = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local bucket_ms = tonumber(ARGV[6])
local nbuckets = tonumber(ARGV[7])
local dd_ttl = tonumber(ARGV[8])
local function doubles(blob)       -- little-endian doubles, a thousand per struct.unpack
  local out, n = {}, #blob / 8
  for c = 0, n - 1, 1000 do
    local m = math.min(1000, n - c)
    local vals = {struct.unpack('<' .. string.rep('d', m), blob, c * 8 + 1)}
    for j = 1, m do out[c + j] = vals[j] end
  end
  return out
end
local keys = cjson.decode(ARGV[9])
local times = doubles(ARGV[10])
local counts = ARGV[11] ~= '' and doubles(ARGV[11]) or nil
local expected = ARGV[12]
local token = ARGV[13]
local nreq = #keys
local floor = math.floor

local wm_key = base .. ':wm'
local open_key = base .. ':open'
local ready_key = base .. ':ready'
local st = redis.call('HMGET', wm_key, 'maxT', 'W', 'late')
local maxT = tonumber(st[1])
local W = tonumber(st[2])
local late = tonumber(st[3]) or 0
local bucket = floor(now / bucket_ms)
local dd_cur = base .. ':dd:' .. bucket

local function fmt(x) return x and string.format('%d', x) or '' end

-- Dedup against the ids of the retention buckets: one SMISMEMBER per bucket and chunk.
local CHUNK = 4000
local seen = {}
for b = bucket - nbuckets + 1, bucket do
  local dd = base .. ':dd:' .. b
  if redis.call('EXISTS', dd) == 1 then
    for c = 1, nreq, CHUNK do
      local res = redis.call('SMISMEMBER', dd, unpack(keys, c, math.min(c + CHUNK - 1, nreq)))
      for j = 1, #res do
        if res[j] == 1 then seen[keys[c + j - 1]] = true end
      end
    end
  end
end

-- Pass 1, no writes: each request's status, and how the watermark moves.
local status, kfrom, klast, late_add, w_after = {}, {}, {}, {}, {}
local fresh = {}
local w, mt = W, maxT
local kmin = w and (floor((w - d) / s) + 1)    -- first window whose end is after the watermark
for i = 1, nreq do
  local key = keys[i]
  if seen[key] then
    status[i] = 'dup'
  else
    seen[key] = true
    fresh[#fresh + 1] = key
    local t = times[i]
    local k0 = floor((t - d) / s) + 1
    local k1 = floor(t / s)
    local kf = k0
    if kmin and kmin > kf then kf = kmin end
    if kf > k0 then late_add[i] = (counts and counts[i] or 1) * (math.min(kf, k1 + 1) - k0) end
    if kf > k1 then
      status[i] = 'L'
    else
      status[i] = kf == k0 and '' or fmt(kf * s)
      kfrom[i], klast[i] = kf, k1
    end
    if mt == nil or t > mt then
      mt = t
      local nw = t - delay
      if w == nil or nw > w then
        w = nw
        w_after[i] = nw
        kmin = floor((w - d) / s) + 1
      end
    end
  end
end
local got = table.concat(status, ';')
if got ~= expected then
  return {fmt(W), fmt(maxT), redis.call('ZCARD', ready_key), got, 'conflict', ''}
end
local stale = {}
for j = 14, #ARGV, 3 do
  local v = tonumber(redis.call('HGET', base .. ':pv:' .. ARGV[j], token)) or 0
  if v ~= tonumber(ARGV[j + 1]) then stale[#stale + 1] = ARGV[j] end
end
if #stale > 0 then
  return {fmt(W), fmt(maxT), redis.call('ZCARD', ready_key), '', 'stale', table.concat(stale, ' ')}
end

-- Pass 2: the writes. Windows the watermark has passed are sealed: their content is final from
-- here on, and the late instances counted since the previous seal are attributed to the first.
-- first_end is the earliest end among open windows: sealing is looked at only once it is passed.
local function earliest_open_end()
  local first = redis.call('ZRANGE', open_key, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) or nil
end
local first_end = earliest_open_end()
local function seal(limit)
  local ready = redis.call('ZRANGEBYSCORE', open_key, '-inf', limit)
  for _, m in ipairs(ready) do
    local e = tonumber(string.match(m, ':(%-?%d+)$'))
    redis.call('ZREM', open_key, m)
    redis.call('ZADD', ready_key, e, m)
    redis.call('HSET', base .. ':meta:' .. m, 'late', late, 'wm', fmt(limit))
    late = 0
  end
  first_end = earliest_open_end()
end

local opened = {}
local last_from, last_to = nil, nil      -- requests of one pane open the same windows: once
for i = 1, nreq do
  if status[i] ~= 'dup' then
    if late_add[i] then late = late + late_add[i] end
    if kfrom[i] and (kfrom[i] ~= last_from or klast[i] ~= last_to) then
      last_from, last_to = kfrom[i], klast[i]
      for k = kfrom[i], klast[i] do
        if not opened[k] then
          opened[k] = true
          local e = k * s + d
          redis.call('ZADD', open_key, 'NX', e, fmt(k * s) .. ':' .. fmt(e))
          if first_end == nil or e < first_end then first_end = e end
        end
      end
    end
    if w_after[i] and first_end and first_end <= w_after[i] then seal(w_after[i]) end
  end
end

for j = 14, #ARGV, 3 do
  local suffix = ARGV[j]
  local pane, member = string.match(suffix, '^(%-?%d+):(.+)$')
  redis.call('SADD', base .. ':pe:' .. pane, member)
  redis.call('HSET', base .. ':p:' .. suffix, token, ARGV[j + 2])
  redis.call('HSET', base .. ':pv:' .. suffix, token, tonumber(ARGV[j + 1]) + 1)
end
for c = 1, #fresh, CHUNK do
  redis.call('SADD', dd_cur, unpack(fresh, c, math.min(c + CHUNK - 1, #fresh)))
end
if #fresh > 0 then
  redis.call('PEXPIRE', dd_cur, dd_ttl)
  redis.call('HSET', wm_key, 'maxT', fmt(mt), 'W', fmt(w), 'late', late, 'lastArr', fmt(now))
end
return {fmt(w), fmt(mt), redis.call('ZCARD', ready_key), '', 'ok', ''}
