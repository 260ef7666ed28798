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
# Knobs (env): RUNS=3 DURATION=10 CONNS=64 THREADS=1 (loadgen's) PORT=18181
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
for r in $(seq "$RUNS"); do
  w=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WRK_LUA" "$URL/v1/heartbeats" | sed -n 's/^RESULT rps=\([0-9]*\).*/\1/p')
  "$TARGET_DIR"/release/loadgen run --target "$URL" --max --connections "$CONNS" --threads "$THREADS" \
    --viewers 250000 --duration "${DURATION}s" --quiet --settle 0s --json "$WORK/lg.json" >/dev/null
  l=$(python3 -c "import json;r=json.load(open('$WORK/lg.json'));print(round(r['throughput']['requests_per_s']), round(r['client_cpu_percent'] or 0), r['latency_us']['post']['uncorrected']['p99'])")
  set -- $l
  echo "run $r: wrk -t1 ${w} req/s | loadgen --max --threads $THREADS ${1} req/s (client CPU ${2}%, p99 ${3}us) | ratio loadgen/wrk $(python3 -c "print(round($1/$w, 2))")"
done
