-- wrk script for the soak: classify, classify_batch, reconstruct, heart and models in rotation.
-- $SOAK_REQUESTS names a file of lines "METHOD PATH BODY_FILE CONTENT_TYPE" (BODY_FILE "-" for none),
-- written by reliability/soak.py. done() prints one line "SOAK {json}" that soak.py reads.
local reqs, n = {}, 0
ok, client_errors, server_errors = 0, 0, 0  -- globals, so done() can read each thread's with thread:get

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function init(args)
  local list = assert(io.open(os.getenv("SOAK_REQUESTS"), "r"))
  for line in list:lines() do
    local method, path, body_file, ctype = line:match("^(%S+) (%S+) (%S+) ?(.*)$")
    local body, headers = nil, {}
    if body_file ~= "-" then
      local f = assert(io.open(body_file, "rb"))
      body = f:read("*a")
      f:close()
      headers["Content-Type"] = ctype
    end
    reqs[#reqs + 1] = wrk.format(method, path, headers, body)
  end
  list:close()
  n = id or 0  -- threads start at different requests
end

function request()
  n = n % #reqs + 1
  return reqs[n]
end

function response(status, headers, body)
  if status < 300 then ok = ok + 1
  elseif status < 500 then client_errors = client_errors + 1
  else server_errors = server_errors + 1 end
end

function done(summary, latency, requests)
  local sums = {ok = 0, client_errors = 0, server_errors = 0}
  for _, t in ipairs(threads) do
    for k in pairs(sums) do sums[k] = sums[k] + t:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests": %d, "ok": %d, "4xx": %d, "5xx": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"timeout": %d, "non_2xx": %d, "duration_s": %.3f, "p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, ' ..
    '"max_ms": %.2f}\n',
    summary.requests, sums.ok, sums.client_errors, sums.server_errors, e.connect, e.read, e.write, e.timeout,
    e.status, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
