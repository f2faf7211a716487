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
    report_line "$report" "$mode" "$round"
  done
done

compare "$OUT" "$ROUNDS" off on
