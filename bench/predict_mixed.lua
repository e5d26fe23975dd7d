-- wrk script: POST /predict bodies whose first ids come from the file named by
-- $MAB_BODY_PREFIX (a JSON prefix ending inside the "items" array, after a comma)
-- and whose last $MAB_FRESH ids are new on every request: with a warm cache, the
-- share of cache hits is (ids - fresh) / ids. Prints one JSON line at the end,
-- like predict.lua.
local f = assert(io.open(os.getenv("MAB_BODY_PREFIX"), "rb"))
local prefix = f:read("*a")
f:close()
local fresh = tonumber(os.getenv("MAB_FRESH") or "20")
local headers = { ["Content-Type"] = "application/json" }
local counter = 0

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function request()
  local ids = {}
  for i = 1, fresh do
    counter = counter + 1
    ids[i] = string.format('"fresh_%s_%d"', thread_tag or "0", counter)
  end
  return wrk.format("POST", "/predict", headers, prefix .. table.concat(ids, ",") .. "]}")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
