-- wrk script: POST /predict with the body in $MAB_BODY, and every $MAB_FEEDBACK_EVERY-th
-- request (0: never) a POST /feedback of $MAB_EVENTS events on ids from that body, each
-- with an event_id of its own (so the dedupe ring works as in production). Prints one
-- JSON line at the end (bench/report.lua).
local f = assert(io.open(os.getenv("MAB_BODY"), "rb"))
local predict = f:read("*a")
f:close()
local every = tonumber(os.getenv("MAB_FEEDBACK_EVERY") or "10")
local events = tonumber(os.getenv("MAB_EVENTS") or "100")
local headers = { ["Content-Type"] = "application/json" }

local ids = {}
for id in predict:gmatch('"(item_%d+)"') do ids[#ids + 1] = id end

local counter = 0

function setup(thread)
  thread:set("thread_tag", tostring(math.random(1, 1e9)))
end

function request()
  counter = counter + 1
  if every > 0 and counter % every == 0 then
    local parts = {}
    for i = 1, events do
      local id = ids[(counter * 7 + i * 13) % #ids + 1]
      parts[i] = string.format('{"id":"%s","reward":%d,"event_id":"%s-%d-%d"}',
        id, (counter + i) % 2, thread_tag or "0", counter, i)
    end
    return wrk.format("POST", "/feedback", headers, '{"events":[' .. table.concat(parts, ",") .. "]}")
  end
  return wrk.format("POST", "/predict", headers, predict)
end

-- done(): the JSON result line, shared with the other scripts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
