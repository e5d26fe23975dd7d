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

-- done(): the JSON result line, shared with the other scripts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
