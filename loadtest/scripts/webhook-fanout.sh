#!/usr/bin/env bash
# Fan-out with one webhook endpoint subscribed to every event, against
# none, side by side in one run: each round runs fan-out once without an
# endpoint ("none") and once with one ("hook"), a fresh broker per run,
# $ROUNDS rounds. The endpoint is this load tester's own receiver
# (`webhooks --receiver-only`, one runtime thread, answering 200 at once),
# registered for ["*"] before the fan-out starts and stopped (SIGINT) when
# it ends, after which it waits until the endpoint has nothing pending.
# Loopback only; every run is bounded.
#
#   loadtest/scripts/webhook-fanout.sh        # 1,000 dashboards, as fast as they keep up
#
# Needs release builds (cargo build --release -p casebroker -p
# casebroker-loadtest). Prints one line per run (mode, round, deliveries
# the receiver got, delivered/s, p50 ms, p99 ms, lost), then the medians
# and the hook/none ratios; the JSON reports go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/webhook-fanout}
PORT=${PORT:-8093}
URL="ws://127.0.0.1:$PORT/v1/ws"
mkdir -p "$OUT"

for round in $(seq "$ROUNDS"); do
  for mode in none hook; do
    settle
    "$BROKER" --config "$CFG" --in-memory --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy "$PORT"
    rpid=
    hooked=
    if [ "$mode" = hook ]; then
      "$LT" webhooks --threads 1 --url "$URL" --receiver-only \
        --seconds $((SECONDS_PER_RUN + 300)) --drain 120 --no-progress \
        --json "$OUT/receiver-$round.json" >"$OUT/receiver.log" 2>&1 &
      rpid=$!
      for _ in $(seq 100); do
        grep -q 'endpoint wh_' "$OUT/receiver.log" && break
        sleep 0.1
      done
      grep -q 'endpoint wh_' "$OUT/receiver.log" || echo "hook $round: no endpoint registered"
    fi
    report="$OUT/$mode-$round.json"
    "$LT" fanout --dashboards "$DASHBOARDS" --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" \
      --url "$URL" --no-progress --json "$report" >/dev/null \
      || echo "$mode $round: the run failed"
    if [ -n "$rpid" ]; then
      kill -INT "$rpid" 2>/dev/null || true
      wait "$rpid" || echo "hook $round: the receiver reported a failure (see $OUT/receiver.log)"
      hooked=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"deliveries={d['deliveries']} all_arrived={d['all_arrived']} dup={d['duplicates']} order={d['out_of_order']} failures={d['failures']}\")" \
        "$OUT/receiver-$round.json" 2>/dev/null || echo "deliveries=?")
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    report_line "$report" "$mode" "$round" ${hooked:+"$hooked"}
  done
done

compare "$OUT" "$ROUNDS" none hook
