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
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/journal-fanout}
PORT=${PORT:-8091}
mkdir -p "$OUT"
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT


for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    settle
    rm -rf "$DATA/data"
    store=(--in-memory)
    if [ "$mode" = on ]; then store=(--data-dir "$DATA/data"); fi
    "$BROKER" --config "$CFG" "${store[@]}" --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy "$PORT"
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
