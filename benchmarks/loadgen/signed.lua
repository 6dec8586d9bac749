-- wrk script: replay pre-signed requests, each once (wrk's Lua has no HMAC).
--
--   wrk -t1 -c50 -d10s -s signed.lua http://127.0.0.1:PORT -- requests.tsv THREADS
--
-- Each line of requests.tsv is: path TAB body TAB name TAB value [TAB name TAB value ...].
-- Thread k of THREADS takes lines k, k+THREADS, ...; a thread that runs out starts
-- over (reusing ids, so the server's dedupe path answers) and counts a wrap.
-- `done` prints one JSON line for benchmarks.loadgen.wrk to read.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs = {}
local idx = 0
wraps = 0

local function fields(line)
  local out, start = {}, 1
  while true do
    local i = string.find(line, "\t", start, true)
    if not i then
      out[#out + 1] = string.sub(line, start)
      return out
    end
    out[#out + 1] = string.sub(line, start, i - 1)
    start = i + 1
  end
end

function init(args)
  local n = tonumber(args[2]) or 1
  local i = 0
  for line in io.lines(args[1]) do
    if i % n == tid then
      local f = fields(line)
      local headers = {}
      for j = 3, #f - 1, 2 do
        headers[f[j]] = f[j + 1]
      end
      reqs[#reqs + 1] = wrk.format("POST", f[1], headers, f[2])
    end
    i = i + 1
  end
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wraps = wraps + 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do
    w = w + (t:get("wraps") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"wraps":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, w))
end
