-- wrk script of bench/load.py: POST one prepared multipart body on every connection, then print one JSON line.
--   WRK_BODY=body.bin WRK_TYPE='multipart/form-data; boundary=...' wrk -s bench/wrk_post.lua URL
-- Latencies are wrk's own histogram (microseconds, every request of the run, connection set-up included);
-- timeouts are requests unanswered after wrk's --timeout; status_errors are answers other than 2xx/3xx.
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("WRK_TYPE")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"timeouts":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.timeout, e.connect, e.read, e.write, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
