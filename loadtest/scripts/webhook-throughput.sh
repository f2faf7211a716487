#!/usr/bin/env bash
# Webhook deliveries per second to the load tester's own receiver, calls
# signed by the broker, the receiver verifying every signature or not,
# alternated in one run: `webhooks` with $DRIVERS drivers as fast as the
# receiver keeps up (at most $WINDOW deliveries ahead, default 200), a
# fresh broker per run, $ROUNDS rounds. Loopback only; every run is bounded.
#
#   loadtest/scripts/webhook-throughput.sh
#
# Needs release builds (cargo build --release -p casebroker -p
# casebroker-loadtest). Prints one line per run (mode, round,
# deliveries/s, p50 ms, p99 ms, lost), then the medians and the
# verified/signed ratios; the JSON reports go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/webhook-throughput}
PORT=${PORT:-8094}
DRIVERS=${DRIVERS:-4}
WINDOW=${WINDOW:-200}
mkdir -p "$OUT"

for round in $(seq "$ROUNDS"); do
  for mode in signed verified; do
    settle
    "$BROKER" --config "$CFG" --in-memory --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy "$PORT"
    extra=()
    if [ "$mode" = verified ]; then extra=(--verify); fi
    report="$OUT/$mode-$round.json"
    "$LT" webhooks --url "ws://127.0.0.1:$PORT/v1/ws" --drivers "$DRIVERS" --window "$WINDOW" \
      --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" "${extra[@]}" \
      --no-progress --json "$report" >"$OUT/$mode-$round.txt" \
      || echo "$mode $round: the run failed (see $OUT/$mode-$round.txt)"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    report_line "$report" "$mode" "$round"
  done
done

compare "$OUT" "$ROUNDS" signed verified
