-- Apply one group-committed batch of instance requests to a monitor's panes, atomically:
-- dedup, lateness, watermark, sealing and the batch's partial aggregates in one step.
-- KEYS[1] = the monitor's key prefix "{mm:<monitor>}" (one hash tag: Redis Cluster safe)
-- ARGV: duration, slide, pane, delay, now, dedupBucketMs, dedupBuckets, dedupTtlMs, nreq,
--       meta (JSON [[dedupKey, eventTimeMs, instances], ...]), expected statuses ("s1;s2;..."),
--       maxPartials, then pairs (partial key suffix "<pane>:<from>:<group>", partial bytes)
-- A status is "dup", "L" (late for every window containing it) or the start of the first window
-- it is on time for ("<from>"; it counts for that window and every later one containing it).
-- The caller built the partials for the statuses it expected. The script first computes the real
-- statuses without writing anything; if they differ (a redelivery it could not know of, another
-- replica moved the watermark) it answers "conflict" with the real statuses and writes nothing,
-- and the caller rebuilds its partials and calls again. Otherwise it writes, and no write can
-- fail after the first one (Redis refuses an out-of-memory script only at its first write).
-- Returns {watermark|"", maxEventTime|"", readyCount, statuses, "ok"|"conflict", keys to compact}
local base = KEYS[1]
local d = tonumber(ARGV[1])
local s = tonumber(ARGV[2])
local g = tonumber(ARGV[3])
local delay = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local bucket_ms = tonumber(ARGV[6])
local nbuckets = tonumber(ARGV[7])
local dd_ttl = tonumber(ARGV[8])
local nreq = tonumber(ARGV[9])
local meta = cjson.decode(ARGV[10])
local expected = ARGV[11]
local max_partials = tonumber(ARGV[12])

local wm_key = base .. ':wm'
local open_key = base .. ':open'
local ready_key = base .. ':ready'
local st = redis.call('HMGET', wm_key, 'maxT', 'W', 'late')
local maxT = tonumber(st[1])
local W = tonumber(st[2])
local late = tonumber(st[3]) or 0
local bucket = math.floor(now / bucket_ms)
local dd_cur = base .. ':dd:' .. bucket

local function fmt(x) return x and string.format('%d', x) or '' end

-- Dedup against the ids of the retention buckets: one SMISMEMBER per bucket and chunk.
local CHUNK = 4000
local keys = {}
for i = 1, nreq do keys[i] = meta[i][1] end
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
for i = 1, nreq do
  local r = meta[i]
  local key, t, n = r[1], r[2], r[3]
  if seen[key] then
    status[i] = 'dup'
  else
    seen[key] = true
    fresh[#fresh + 1] = key
    local k0 = math.floor((t - d) / s) + 1
    local k1 = math.floor(t / s)
    local kf = k0
    if w ~= nil then
      local kmin = math.floor((w - d) / s) + 1   -- first window whose end is after the watermark
      if kmin > kf then kf = kmin end
    end
    late_add[i] = n * (math.min(kf, k1 + 1) - k0)
    if kf > k1 then
      status[i] = 'L'
    else
      status[i] = fmt(kf * s)
      kfrom[i], klast[i] = kf, k1
    end
    if mt == nil or t > mt then
      mt = t
      local nw = t - delay
      if w == nil or nw > w then
        w = nw
        w_after[i] = nw
      end
    end
  end
end
local got = table.concat(status, ';')
if got ~= expected then
  return {fmt(W), fmt(maxT), redis.call('ZCARD', ready_key), got, 'conflict', ''}
end

-- Pass 2: the writes. Windows the watermark has passed are sealed: their content is final from
-- here on, and the late instances counted since the previous seal are attributed to the first.
local function seal(limit)
  local ready = redis.call('ZRANGEBYSCORE', open_key, '-inf', limit)
  for _, m in ipairs(ready) do
    local e = tonumber(string.match(m, ':(%-?%d+)$'))
    redis.call('ZREM', open_key, m)
    redis.call('ZADD', ready_key, e, m)
    redis.call('HSET', base .. ':meta:' .. m, 'late', late, 'wm', fmt(limit))
    late = 0
  end
end

local opened = {}
for i = 1, nreq do
  if status[i] ~= 'dup' then
    late = late + late_add[i]
    if kfrom[i] then
      for k = kfrom[i], klast[i] do
        if not opened[k] then
          opened[k] = true
          redis.call('ZADD', open_key, 'NX', k * s + d, fmt(k * s) .. ':' .. fmt(k * s + d))
        end
      end
    end
    if w_after[i] then seal(w_after[i]) end
  end
end

local compact = {}
for j = 13, #ARGV, 2 do
  local suffix = ARGV[j]
  local pane, member = string.match(suffix, '^(%-?%d+):(.+)$')
  local pk = base .. ':p:' .. suffix
  redis.call('SADD', base .. ':pe:' .. pane, member)
  if redis.call('RPUSH', pk, ARGV[j + 1]) > max_partials then compact[#compact + 1] = suffix end
end
for c = 1, #fresh, CHUNK do
  redis.call('SADD', dd_cur, unpack(fresh, c, math.min(c + CHUNK - 1, #fresh)))
end
if #fresh > 0 then
  redis.call('PEXPIRE', dd_cur, dd_ttl)
  redis.call('HSET', wm_key, 'maxT', fmt(mt), 'W', fmt(w), 'late', late, 'lastArr', fmt(now))
end
-- Statuses travel as one string: parsing thousands of replies costs the client more than this.
return {fmt(w), fmt(mt), redis.call('ZCARD', ready_key), got, 'ok', table.concat(compact, ' ')}
