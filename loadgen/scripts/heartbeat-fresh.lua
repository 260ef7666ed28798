-- wrk script: like perf-ref's heartbeat.lua (250,000 learner keyspace, keep-alive), but
-- every request carries a seq above all earlier ones, so every heartbeat is applied and
-- becomes a store write — the same server work as loadgen's traffic. The request is
-- formatted per call (wrk's cost, not the server's). seq starts at the wall clock in ms
-- and grows by one per request, within the API's 24 h bound for ~86 M requests.
local KEYS = 250000
local seq = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  math.randomseed(os.time() + math.random(1, 1000000))
  seq = os.time() * 1000 + math.random(0, 999)
end

function request()
  seq = seq + 1
  local k = math.random(0, KEYS - 1)
  local body = string.format(
    '{"learner_id":"learner-%08d-0000-4000-8000-%012d","lesson_id":"lesson-0001","position_ms":%d,"seq":%d}',
    k, k, seq % 3600000, seq)
  return wrk.format("POST", "/v1/heartbeats", headers, body)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.0f requests=%d p50_us=%d p99_us=%d non2xx=%d\n",
    summary.requests / secs, summary.requests, latency:percentile(50), latency:percentile(99), e.status))
end
