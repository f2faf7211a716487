#!/usr/bin/env bash
# Fan-out with the journal on and off, side by side in one run: a fresh
# broker (and, for "on", a fresh data directory) per run, alternated,
# $ROUNDS rounds. Loopback only; every run is bounded.
#
#   loadtest/scripts/journal-fanout.sh                          # 1,000 dashboards, as fast as they keep up
#   DASHBOARDS=10 RATE=1000 loadtest/scripts/journal-fanout.sh  # paced: the latency a commit adds
#
# Needs release builds (cargo build --release -p casebroker -p
# casebroker-loadtest). Prints one line per run (mode, round,
# delivered/s, p50 ms, p99 ms, lost), then the medians and on/off ratios;
# the JSON reports go to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
LT=target/release/casebroker-loadtest
BROKER=target/release/casebroker
CFG=loadtest/casebroker-load.toml
DASHBOARDS=${DASHBOARDS:-1000}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
OUT=${OUT:-target/journal-fanout}
PORT=${PORT:-8091}
RATE_ARGS=()
if [ -n "${RATE:-}" ]; then RATE_ARGS=(--rate "$RATE"); fi
mkdir -p "$OUT"
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

# Tens of thousands of sockets in TIME_WAIT slow connect down: wait them out.
settle() { while [ "$(ss -tan state time-wait | wc -l)" -gt 2000 ]; do sleep 1; done; }
healthy() { for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.1; done; }

for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    settle
    rm -rf "$DATA/data"
    store=(--in-memory)
    if [ "$mode" = on ]; then store=(--data-dir "$DATA/data"); fi
    "$BROKER" --config "$CFG" "${store[@]}" --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy
    report="$OUT/$mode-$round.json"
    "$LT" fanout --dashboards "$DASHBOARDS" --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" \
      --url "ws://127.0.0.1:$PORT/v1/ws" --no-progress --json "$report" >/dev/null \
      || echo "$mode $round: the run failed"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(d['delivered_per_sec']), d['p50_ms'], d['p99_ms'], d['lost'])" \
      "$report" "$mode" "$round" 2>/dev/null || true
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(mode, key):
    return [json.load(open(f"{out}/{mode}-{r}.json"))[key] for r in range(1, rounds + 1)]
for key in ("delivered_per_sec", "p50_ms", "p99_ms"):
    off, on = statistics.median(runs("off", key)), statistics.median(runs("on", key))
    pairs = [b / a if a else float("nan") for a, b in zip(runs("off", key), runs("on", key))]
    print(f"{key}: off {off:.3f}, on {on:.3f}, on/off {on / off:.3f} (pairs {' · '.join(f'{p:.3f}' for p in pairs)})")
PY
