#!/usr/bin/env bash
# What webhooks add to the journal: the same changes at the same rate on a
# broker with a data directory, webhooks off (`webhooks --no-endpoint`)
# and on (the load tester's receiver registered for ["*"]), alternated,
# a fresh broker and data directory per run, $ROUNDS rounds. Per case
# change, from the broker's /metrics: journal changes
# (casebroker_journal_changes_total), journal bytes
# (casebroker_journal_bytes_total) and broker CPU (process_cpu_seconds_total).
# Loopback only; every run is bounded.
#
#   loadtest/scripts/webhook-journal.sh            # 2,000 changes/s, 10 s
#   RATE= loadtest/scripts/webhook-journal.sh      # as fast as it goes
#
# Needs release builds (cargo build --release -p casebroker -p
# casebroker-loadtest). Prints one line per run, then the medians and the
# on/off ratios; the JSON reports go to $OUT.
set -euo pipefail
RATE=${RATE-2000}
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/webhook-journal}
PORT=${PORT:-8095}
DRIVERS=${DRIVERS:-4}
mkdir -p "$OUT"

for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    settle
    data=$(mktemp -d "${TMPDIR:-/tmp}/casebroker-webhook-journal.XXXXXX")
    "$BROKER" --config "$CFG" --data-dir "$data" --listen "127.0.0.1:$PORT" >"$OUT/$mode.log" 2>&1 &
    pid=$!
    healthy "$PORT"
    extra=()
    if [ "$mode" = off ]; then extra=(--no-endpoint); fi
    report="$OUT/$mode-$round.json"
    "$LT" webhooks --url "ws://127.0.0.1:$PORT/v1/ws" --drivers "$DRIVERS" \
      --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" "${extra[@]}" \
      --no-progress --json "$report" >"$OUT/$mode-$round.txt" \
      || echo "$mode $round: the run failed (see $OUT/$mode-$round.txt)"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(d['changes_per_sec']), d['journal_changes_per_change'], d['journal_bytes_per_change'], d['broker_cpu_us_per_change'], d.get('deliveries'))" \
      "$report" "$mode" "$round" 2>/dev/null || true
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(mode, key):
    return [json.load(open(f"{out}/{mode}-{r}.json"))[key] for r in range(1, rounds + 1)]
for key in ("changes_per_sec", "journal_changes_per_change", "journal_bytes_per_change", "broker_cpu_us_per_change"):
    off, on = runs("off", key), runs("on", key)
    a, b = statistics.median(off), statistics.median(on)
    print(f"{key}: off {a:.3f} ({' · '.join(f'{x:.3f}' for x in off)}), on {b:.3f} ({' · '.join(f'{x:.3f}' for x in on)}), on/off {b / a:.3f}")
PY
