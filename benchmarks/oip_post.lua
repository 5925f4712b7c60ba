-- wrk script for benchmarks/serving_vs_mlserver.py: POST one Open Inference Protocol v2 body
-- (read from the file named by $OIP_BODY) on every request, then print one JSON line with the
-- counts and latency percentiles (microseconds) after the run, for the harness to parse.
local path = os.getenv("OIP_BODY")
if path == nil then
  error("set OIP_BODY to the file holding the JSON request body")
end
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '@@wrk {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout))
end
