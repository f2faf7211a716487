#!/usr/bin/env bash
# Fan-out while the directory changes, side by side in one run: each round
# runs fan-out quiet, with the same requests at the same pace to a path
# that changes nothing (control: what the requests cost), and with an agent
# changed through the admin API every 100 ms by the clock (PATCH of its
# name and max_cases, alternating); a fresh broker per run, $ROUNDS
# rounds. Loopback only; every run is bounded.
#
#   loadtest/scripts/directory-fanout.sh        # 1,000 dashboards, as fast as they keep up
#
# Needs release builds (cargo build --release -p casebroker -p
# casebroker-loadtest) and curl. Prints one line per run (mode, round,
# changes made, delivered/s, p50 ms, p99 ms, lost), then the medians and
# the with/without ratios; the JSON reports go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/directory-fanout}
PORT=${PORT:-8092}
ADMIN=load-admin-token
mkdir -p "$OUT"

# One change every 100 ms by the clock (each request in the background, so
# a slow answer does not stretch the pace); the changes the broker really
# made are read from its metrics at the end of the run.
changes() {
  local path=$1 n=0 start now next end
  start=$(date +%s%N)
  end=$(( start + (SECONDS_PER_RUN + 2) * 1000000000 ))
  while now=$(date +%s%N); [ "$now" -lt "$end" ]; do
    curl -sf -o /dev/null -X PATCH "127.0.0.1:$PORT$path" \
      -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
      -d "{\"name\":\"Churn $n\",\"max_cases\":$(( n % 2 + 1 ))}" &
    n=$((n + 1))
    next=$(( start + n * 100000000 ))
    now=$(date +%s%N)
    if [ "$next" -gt "$now" ]; then
      sleep "$(awk "BEGIN { printf \"%.3f\", ($next - $now) / 1e9 }")"
    fi
  done
  wait
}

# The agent changes the broker made, from its metrics.
made() {
  curl -sf "127.0.0.1:$PORT/metrics" \
    | awk '/^casebroker_directory_changes_total\{change="agent_changed"\}/ { print $2 }' \
    | grep . || echo 0
}

for round in $(seq "$ROUNDS"); do
  for mode in quiet control changing; do
    settle
    "$BROKER" --config "$CFG" --in-memory --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy "$PORT"
    curl -sf -o /dev/null -X POST "127.0.0.1:$PORT/v1/admin/agents" \
      -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
      -d '{"id":"churn","name":"Churn","groups":["support"]}'
    cpid=
    # control: the same requests at the same pace to a path that changes
    # nothing (404), so that what the requests themselves cost on this
    # machine (a curl process each) is measured apart from the change.
    if [ "$mode" = changing ]; then changes /v1/admin/agents/churn & cpid=$!; fi
    if [ "$mode" = control ]; then changes /v1/admin/nothing-here & cpid=$!; fi
    report="$OUT/$mode-$round.json"
    "$LT" fanout --dashboards "$DASHBOARDS" --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" \
      --url "ws://127.0.0.1:$PORT/v1/ws" --no-progress --json "$report" >/dev/null \
      || echo "$mode $round: the run failed"
    if [ -n "$cpid" ]; then wait "$cpid" || true; fi
    made=$(made)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    report_line "$report" "$mode" "$round" "changes=$made"
  done
done

compare "$OUT" "$ROUNDS" quiet changing
compare "$OUT" "$ROUNDS" control changing
