#!/usr/bin/env bash
# Lifecycle throughput of two broker builds side by side in one run:
# OLD=path/to/old/casebroker [NEW=target/release/casebroker] ROUNDS=3
# loadtest/scripts/ab-lifecycle.sh [memory|journal]
# Alternates old and new, a fresh broker (and data directory) per run,
# waits for TIME_WAIT to drain between runs; prints each run's cases/s and
# the medians' ratio new / old.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODE=${1:-memory}
OLD=${OLD:?set OLD to the old broker binary}
NEW=${NEW:-$BROKER}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-32}
PORT=18311

run() {
  local bin=$1 data args=()
  data=$(mktemp -d)
  if [ "$MODE" = journal ]; then args=(--data-dir "$data"); fi
  "$bin" --config "$CFG" --listen "127.0.0.1:$PORT" "${args[@]}" >/dev/null 2>&1 &
  local pid=$!
  healthy $PORT
  "$LT" lifecycle --url "ws://127.0.0.1:$PORT/v1/ws" --seconds "$SECONDS_PER_RUN" \
    --concurrency "$CONCURRENCY" 2>&1 | sed -n 's/.*cases completed *│ *[0-9,]* (\([0-9,]*\)\/s).*/\1/p' | tr -d ,
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  settle
}

old=(); new=()
for r in $(seq "$ROUNDS"); do
  o=$(run "$OLD"); n=$(run "$NEW")
  echo "round $r ($MODE): old $o cases/s, new $n cases/s"
  old+=("$o"); new+=("$n")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
mo=$(median "${old[@]}"); mn=$(median "${new[@]}")
echo "median ($MODE): old $mo, new $mn, new/old $(echo "scale=3; $mn / $mo" | bc)"
