#!/usr/bin/env bash
# Fan-out on a cluster, side by side in one run: one cluster node with all
# the dashboards, two nodes with half each (the driver on the first), and a
# single broker without a cluster; alternated, three rounds, a fresh Redis
# data set and fresh brokers per run. Loopback only; every run is bounded.
#
#   loadtest/scripts/cluster-fanout.sh                    # 1,000 dashboards, as fast as they keep up
#   RATE=100 loadtest/scripts/cluster-fanout.sh           # paced: push latency
#   DASHBOARDS=100 RATE=100 loadtest/scripts/cluster-fanout.sh
#
# Needs redis-server and release builds (cargo build --release -p casebroker
# -p casebroker-loadtest). Prints one line per run: mode, round,
# delivered/s, p99 ms, lost; the JSON reports go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
OUT=${OUT:-target/cluster-fanout}
REDIS_PORT=${REDIS_PORT:-16399}
mkdir -p "$OUT"
start_redis --appendonly yes --appendfsync always

for round in 1 2 3; do
  for mode in one two plain; do
    settle
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $mode in
      one)
        pids=$(cluster_node a 8081); healthy 8081
        args=(--url "$(ws_url 8081)") ;;
      two)
        pids="$(cluster_node a 8081) $(cluster_node b 8082)"; healthy 8081 8082
        args=(--url "$(ws_url 8081)" --dashboard-url "$(ws_url 8081)" --dashboard-url "$(ws_url 8082)") ;;
      plain)
        "$BROKER" --config "$CFG" --listen 127.0.0.1:8083 >"$OUT/plain.log" 2>&1 & pids=$!
        healthy 8083
        args=(--url "$(ws_url 8083)") ;;
    esac
    report="$OUT/$mode-$round.json"
    "$LT" fanout --dashboards "$DASHBOARDS" --seconds "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" \
      "${args[@]}" --no-progress --json "$report" >/dev/null || echo "$mode $round: the run failed"
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $pids 2>/dev/null || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(d['delivered_per_sec']), d['p99_ms'], d['lost'])" \
      "$report" "$mode" "$round" 2>/dev/null || true
  done
done
