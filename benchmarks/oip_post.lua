-- wrk script for benchmarks/serving_vs_mlserver.py: POST one Open Inference Protocol v2 body
-- (read from the file named by $OIP_BODY) on every request, then print one JSON line with the
-- counts and latency percentiles (microseconds) after the run, for the harness to parse.
-- With $OIP_PATHS (a file of URL paths, one a line) requests go to those paths in turn (round
-- robin per wrk thread, from a random start), so that load spreads over many models.
local path = os.getenv("OIP_BODY")
if path == nil then
  error("set OIP_BODY to the file holding the JSON request body")
end
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

local paths = {}
local paths_file = os.getenv("OIP_PATHS")
if paths_file ~= nil then
  for line in io.lines(paths_file) do
    if line ~= "" then
      paths[#paths + 1] = line
    end
  end
end
local turn = 0

function init(args)
  -- wrk runs this once per thread; spread the threads' starting points
  turn = math.random(1, math.max(#paths, 1))
end

if #paths > 0 then
  function request()
    turn = turn % #paths + 1
    return wrk.format(nil, paths[turn])
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '@@wrk {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout))
end
