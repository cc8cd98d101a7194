-- Apply one group-committed batch of instance requests to a monitor's windows, atomically.
-- For each request in order: dedup by key, assign to its windows (late ones are counted, not
-- added), advance the watermark, and seal every window the watermark has passed.
-- KEYS[1] = the monitor's key prefix "{mm:<monitor>}" (one hash tag: Redis Cluster safe)
-- ARGV: duration, slide, delay, now, dedupBucketMs, dedupBuckets, dedupTtlMs, nreq,
--       meta (JSON [[dedupKey, eventTimeMs, instances, group, numericBytes, categoricalBytes], ...]),
--       numeric (all requests' packed rows, concatenated), categorical (likewise)
-- Returns {watermark|"", maxEventTime|"", readyCount, "status_1;...;status_n"}
--   status: "ok" | "dup" | "late:<start>,<start>..." (windows the request was late for)
-- Per request the script does arithmetic only; Redis commands are per batch or per window.
local base = KEYS[1]
local d = tonumber(ARGV[1])
local s = tonumber(ARGV[2])
local delay = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local bucket_ms = tonumber(ARGV[5])
local nbuckets = tonumber(ARGV[6])
local dd_ttl = tonumber(ARGV[7])
local nreq = tonumber(ARGV[8])
local meta = cjson.decode(ARGV[9])
local num_all = ARGV[10]
local cat_all = ARGV[11]

local wm_key = base .. ':wm'
local open_key = base .. ':open'
local ready_key = base .. ':ready'
local st = redis.call('HMGET', wm_key, 'maxT', 'W', 'late')
local maxT = tonumber(st[1])
local W = tonumber(st[2])
local late = tonumber(st[3]) or 0
local bucket = math.floor(now / bucket_ms)
local dd_cur = base .. ':dd:' .. bucket

local pending, order, out = {}, {}, {}
local accepted = false

-- Windows the watermark has passed are sealed: their content is final from here on, and the
-- late instances counted since the previous seal are attributed to the first of them.
local function seal()
  local ready = redis.call('ZRANGEBYSCORE', open_key, '-inf', W)
  for _, m in ipairs(ready) do
    local e = tonumber(string.match(m, ':(%-?%d+)$'))
    redis.call('ZREM', open_key, m)
    redis.call('ZADD', ready_key, e, m)
    redis.call('HSET', base .. ':meta:' .. m, 'late', late, 'wm', W)
    late = 0
  end
end

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

local fresh = {}
local num_off, cat_off = 0, 0
local win_of = {}   -- window start -> {numeric chunks, categorical chunks} per group (no string work per request)
for i = 1, nreq do
  local r = meta[i]
  local key, t, n, g = r[1], r[2], r[3], r[4]
  local num_len, cat_len = r[5], r[6]
  local num_from, cat_from = num_off + 1, cat_off + 1
  num_off = num_off + num_len
  cat_off = cat_off + cat_len
  if seen[key] then
    out[i] = 'dup'
  else
    seen[key] = true
    fresh[#fresh + 1] = key
    accepted = true
    local late_starts = nil
    local num = nil
    local cat = nil
    for k = math.floor((t - d) / s) + 1, math.floor(t / s) do
      local ws = k * s
      local we = ws + d
      if W ~= nil and we <= W then
        late = late + n
        late_starts = late_starts or {}
        late_starts[#late_starts + 1] = string.format('%d', ws)
      else
        local slot = ws .. g
        local p = win_of[slot]
        if p == nil then
          local m = string.format('%d:%d', ws, we)
          local dk = base .. ':w:' .. m .. ':' .. g
          p = {{}, {}}
          win_of[slot] = p
          pending[dk] = p
          order[#order + 1] = dk
          redis.call('ZADD', open_key, 'NX', we, m)
        end
        if num_len > 0 then
          num = num or string.sub(num_all, num_from, num_off)
          p[1][#p[1] + 1] = num
        end
        if cat_len > 0 then
          cat = cat or string.sub(cat_all, cat_from, cat_off)
          p[2][#p[2] + 1] = cat
        end
      end
    end
    if late_starts then
      out[i] = 'late:' .. table.concat(late_starts, ',')
    else
      out[i] = 'ok'
    end
    if maxT == nil or t > maxT then
      maxT = t
      local nw = t - delay
      if W == nil or nw > W then
        W = nw
        seal()
      end
    end
  end
end
for c = 1, #fresh, CHUNK do
  redis.call('SADD', dd_cur, unpack(fresh, c, math.min(c + CHUNK - 1, #fresh)))
end

-- One APPEND per window and group for the whole batch (no command per instance).
for _, dk in ipairs(order) do
  local p = pending[dk]
  if #p[1] > 0 then redis.call('APPEND', dk, table.concat(p[1])) end
  if #p[2] > 0 then redis.call('APPEND', dk .. ':c', table.concat(p[2])) end
end
if accepted then
  redis.call('PEXPIRE', dd_cur, dd_ttl)
  redis.call('HSET', wm_key, 'maxT', string.format('%d', maxT), 'W', string.format('%d', W),
             'late', late, 'lastArr', string.format('%d', now))
end
-- Statuses travel as one string: parsing thousands of replies costs the client more than this.
return {W and string.format('%d', W) or '', maxT and string.format('%d', maxT) or '',
        redis.call('ZCARD', ready_key), table.concat(out, ';')}
