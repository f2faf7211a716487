# Shared by the side-by-side fan-out scripts (sourced, not run): the
# binaries and config, the run's size from the environment, and helpers.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LT=target/release/casebroker-loadtest
BROKER=${BROKER:-target/release/casebroker}
CFG=${CFG:-loadtest/casebroker-load.toml}
DASHBOARDS=${DASHBOARDS:-1000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE_ARGS=()
if [ -n "${RATE:-}" ]; then RATE_ARGS=(--rate "$RATE"); fi

# Tens of thousands of sockets in TIME_WAIT slow connect down: wait them out.
settle() { while [ "$(ss -tan state time-wait | wc -l)" -gt 2000 ]; do sleep 1; done; }
# Waits until the broker on each of the given loopback ports answers /healthz.
healthy() { for port in "$@"; do for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done; done; }
# One run's line from its fan-out JSON report: the labels given, then
# delivered/s, p50 ms, p99 ms and lost.
report_line() {
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(*sys.argv[2:], round(d['delivered_per_sec']), d['p50_ms'], d['p99_ms'], d['lost'])" "$@" 2>/dev/null || true
}
# Medians of ROUNDS runs of two modes ($OUT/MODE-ROUND.json) and their
# ratio, with each round's pair: compare OUT ROUNDS BASE OTHER.
compare() {
  python3 - "$@" <<'PY'
import json, statistics, sys
out, rounds, base, other = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def runs(mode, key):
    return [json.load(open(f"{out}/{mode}-{r}.json"))[key] for r in range(1, rounds + 1)]
for key in ("delivered_per_sec", "p50_ms", "p99_ms"):
    b, o = statistics.median(runs(base, key)), statistics.median(runs(other, key))
    pairs = [y / x if x else float("nan") for x, y in zip(runs(base, key), runs(other, key))]
    print(f"{key}: {base} {b:.3f}, {other} {o:.3f}, {other}/{base} {o / b:.3f} (pairs {' · '.join(f'{p:.3f}' for p in pairs)})")
PY
}

# Starts redis-server on 127.0.0.1:$REDIS_PORT in a scratch directory
# ($DATA; further redis-server options as arguments), waits until it
# answers, and on exit stops it and the processes in $pids (the nodes)
# and removes the directory.
pids=""
start_redis() {
  DATA=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --dir "$DATA" \
    --daemonize yes --logfile "$DATA/redis.log" "$@"
  trap stop_redis EXIT
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_redis() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$DATA"
}

# A cluster node on the Redis of start_redis: cluster_node NAME PORT
# [ROUND] starts it on 127.0.0.1:PORT with the load config (its log in
# $OUT/NAME[-ROUND].log) and prints its pid. With LINKS=1 the nodes link
# directly ([cluster] link on a free loopback port); NODE_WORKERS=N gives
# each node N worker threads (--workers).
cluster_node() {
  "$BROKER" --config "$CFG" --redis-url "redis://127.0.0.1:$REDIS_PORT" --node-id "$1" \
    --listen "127.0.0.1:$2" ${LINKS:+--link 127.0.0.1:0} ${NODE_WORKERS:+--workers "$NODE_WORKERS"} \
    >"$OUT/$1${3:+-$3}.log" 2>&1 &
  echo $!
}
# The WebSocket URL of the broker on 127.0.0.1:PORT.
ws_url() { echo "ws://127.0.0.1:$1/v1/ws"; }
# Starts COUNT (1 to 3) cluster nodes for round ROUND, a, b, c on ports
# 8081, 8082, 8083, waits until they answer, and sets $pids and $args,
# the lifecycle's targets (--url for a, --node-url for the others).
lifecycle_nodes() {
  local names=(a b c) ports=() i
  pids=""; args=()
  for ((i = 0; i < $1; i++)); do
    ports+=($((8081 + i)))
    pids="$pids $(cluster_node "${names[$i]}" "${ports[$i]}" "$2")"
    if [ "$i" -eq 0 ]; then args+=(--url "$(ws_url 8081)"); else args+=(--node-url "$(ws_url "${ports[$i]}")"); fi
  done
  healthy "${ports[@]}"
}
