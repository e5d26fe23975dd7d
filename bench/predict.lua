-- wrk script: POST the JSON body in the file named by $MAB_BODY to /predict, and
-- print one JSON line of results at the end (bench/report.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("MAB_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()

-- done(): the JSON result line, shared with the other scripts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "") .. "report.lua")
