#!/usr/bin/env bash
# Is loadgen the bottleneck? Drives one progressd with wrk and with `loadgen run --max`,
# interleaved, same connections, same duration, same cores, and prints both rates.
# wrk runs heartbeat-fresh.lua (beside this script) by default: every heartbeat is new, so
# the server does the same work per request as for loadgen; perf-ref's heartbeat.lua
# repeats 4096 heartbeats, which the server soon answers as stale without a store write.
# Traffic goes to 127.0.0.1 only; the server is stopped by PID.
#
# Usage: loadgen/scripts/vs-wrk.sh [STORE_URL]   (default memory://; any sqlite:// URL
#        means a fresh database in a temporary folder)
# Knobs (env): RUNS=3 DURATION=10 CONNS=64 THREADS=1 (loadgen's) PORT=18181 ADVERSARIAL=0
#              WRK_LUA=loadgen/scripts/heartbeat-fresh.lua (or ../shared/perf-ref/heartbeat.lua)
#              TARGET_DIR=$CARGO_TARGET_DIR or ./target
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}; DURATION=${DURATION:-10}; CONNS=${CONNS:-64}; PORT=${PORT:-18181}; THREADS=${THREADS:-1}
STORE=${1:-memory://}
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
WRK_LUA=${WRK_LUA:-loadgen/scripts/heartbeat-fresh.lua}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet -p progressd -p loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vs-wrk.XXXXXX")
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
[[ "$STORE" == sqlite://* ]] && STORE="sqlite://$WORK/progress.db"
"$TARGET_DIR"/release/progressd serve --listen "127.0.0.1:$PORT" --store "$STORE" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT"
echo "== $(nproc) cores, $(uname -r), store $STORE, server pid $SERVER_PID, ${DURATION}s x $RUNS, $CONNS connections, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
# Both tools keep their keys from run to run (wrk's script has a fixed keyspace; loadgen
# gets a fixed --id-prefix), and one unmeasured round first makes every key resident, so
# neither pays the server's first-heartbeat store reads in a measured run. loadgen sends
# plain heartbeats, like the wrk script (ADVERSARIAL=1 keeps its default duplicates,
# reordering, offline batches, device switches and churn, which cost the server more).
# Each tool's user+system CPU is taken with GNU time and divided by its requests: the
# generator's own cost per request, less noisy on shared cores than the rates.
PLAIN=(--dup-rate 0 --reorder-rate 0 --offline-rate 0 --device-switch-rate 0 --churn-rate 0)
[[ "${ADVERSARIAL:-0}" == 1 ]] && PLAIN=()
cpu_of() { awk '{printf "%.2f", $1 + $2}' "$WORK/time"; }
run_wrk() {  # prints: rps requests cpu_seconds
  local out
  out=$(/usr/bin/time -o "$WORK/time" -f "%U %S" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WRK_LUA" "$URL/v1/heartbeats" \
    | sed -n 's/^RESULT rps=\([0-9]*\) requests=\([0-9]*\).*/\1 \2/p')
  echo "$out $(cpu_of)"
}
run_loadgen() {  # prints: rps requests cpu_seconds p99_us
  /usr/bin/time -o "$WORK/time" -f "%U %S" "$TARGET_DIR"/release/loadgen run --target "$URL" --max \
    --connections "$CONNS" --threads "$THREADS" --viewers 250000 --id-prefix vs-wrk --duration "${DURATION}s" \
    --quiet --settle 0s --json "$WORK/lg.json" "${PLAIN[@]}" >/dev/null
  python3 -c "import json;r=json.load(open('$WORK/lg.json'));print(round(r['throughput']['requests_per_s']), r['counters']['requests'], '$(cpu_of)', r['latency_us']['post']['uncorrected']['p99'])"
}
run_wrk >/dev/null; run_loadgen >/dev/null
ratios=()
for r in $(seq "$RUNS"); do
  read -r w_rps w_req w_cpu < <(run_wrk)
  read -r l_rps l_req l_cpu l_p99 < <(run_loadgen)
  ratio=$(python3 -c "print(round($l_rps/$w_rps, 2))")
  ratios+=("$ratio")
  echo "run $r: wrk -t1 ${w_rps} req/s ($(python3 -c "print(round($w_cpu*1e6/$w_req, 1))") µs CPU/req)" \
    "| loadgen --max --threads $THREADS ${l_rps} req/s ($(python3 -c "print(round($l_cpu*1e6/$l_req, 1))") µs CPU/req, p99 ${l_p99}µs)" \
    "| ratio loadgen/wrk $ratio"
done
echo "median ratio loadgen/wrk: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')"
