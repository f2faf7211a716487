#!/usr/bin/env bash
# Where a node's CPU goes when one company's cases span two nodes: the
# `lifecycle` scenario (as cluster-lifecycle.sh) on one node and on two,
# each node sampled by `perf` for the whole run, and its CPU per finished
# case split by the tasks that spent it. Modes alternated, ROUNDS rounds
# (3 by default), medians printed. Loopback only; every run is bounded.
#
#   cargo build --release -p casebroker-loadtest
#   RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/fp \
#     cargo build --release -p casebroker
#   BROKER=target/fp/release/casebroker loadtest/scripts/cluster-profile.sh
#   LINKS=1 BROKER=target/fp/release/casebroker loadtest/scripts/cluster-profile.sh   # linked nodes
#
# Needs redis-server, `perf` (linux-perf; kernel.perf_event_paranoid at
# most 1, or root), the load tester's release build, and a broker built
# with frame pointers (as above), or the split is meaningless. Not run by
# CI. The perf data and reports go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
OUT=${OUT:-target/cluster-profile}
REDIS_PORT=${REDIS_PORT:-16396}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-16}
FREQ=${FREQ:-1999}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
start_redis --appendonly yes --appendfsync everysec

# Splits perf samples (`perf script -F period,ip,sym` on stdin) by the task
# that spent them: each sample goes to the outermost frame that names one
# of the parts; the rest is the runtime's own work, timers and what could
# not be told apart. Prints nanoseconds per part as JSON.
cat >"$OUT/split.py" <<'PY'
import json, re, sys
PARTS = [
    ("threads parking and waking", r"scheduler::multi_thread::worker::Context::park_internal$"),
    ("WebSocket connections: handshake, commands, pushes", r"transport::upgrade::Upgrade::on_upgrade::\{\{closure\}\}$"),
    ("commands run for another node", r"transport::forward::handler::\{\{closure\}\}::\{\{closure\}\}$"),
    ("commits stored in Redis, then delivered", r"cluster::log::<impl casebroker::cluster::Cluster>::appender::\{\{closure\}\}$"),
    ("another node's commits applied", r"casebroker::core::replica::<impl casebroker::core::Broker>::follow$"),
    ("calls to another node, batched and published", r"cluster::calls::send_batches::\{\{closure\}\}$"),
    ("direct links: notices, calls, answers in", r"cluster::peers::<impl casebroker::cluster::Cluster>::read_link::\{\{closure\}\}$"),
    ("Redis connection: commands out, answers in", r"redis::aio::multiplexed_connection::PipelineSink<T> as futures_sink::Sink<"),
    ("Redis subscriptions: notices, calls, answers in", r"redis::aio::pubsub::PipelineSink<T> as futures_sink::Sink<"),
]
PARTS = [(name, re.compile(p)) for name, p in PARTS]
ns = {name: 0 for name, _ in PARTS}
ns["the rest"] = 0
ns["all"] = 0
def flush(period, frames):
    if period is None:
        return
    ns["all"] += period
    for sym in reversed(frames):
        for name, pat in PARTS:
            if pat.search(sym):
                ns[name] += period
                return
    ns["the rest"] += period
period, frames = None, []
for line in sys.stdin:
    if not line.strip():
        continue
    if not line.startswith("\t") and not line.startswith(" " * 8 + "\t"):
        head = line.split()
        if len(head) == 1 and head[0].isdigit():
            flush(period, frames)
            period, frames = int(head[0]), []
            continue
    parts = line.strip().split(None, 1)
    if len(parts) == 2:
        frames.append(parts[1])
flush(period, frames)
json.dump(ns, sys.stdout)
PY

for round in $(seq "$ROUNDS"); do
  for mode in one two; do
    settle
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $mode in one) n=1 ;; two) n=2 ;; esac
    lifecycle_nodes "$n" "$round"
    perfs=""; i=0
    for pid in $pids; do
      i=$((i + 1))
      perf record -F "$FREQ" --call-graph fp -p "$pid" -o "$OUT/$mode-$round-$i.data" >/dev/null 2>&1 &
      perfs="$perfs $!"
    done
    "$LT" lifecycle --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN" \
      "${args[@]}" --no-progress --json "$OUT/$mode-$round.json" >/dev/null || echo "$mode $round: the run reported failures"
    # shellcheck disable=SC2086
    kill -INT $perfs 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $perfs 2>/dev/null || true
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $pids 2>/dev/null || true
    for i in $(seq "$(echo "$pids" | wc -w)"); do
      perf script -i "$OUT/$mode-$round-$i.data" -F period,ip,sym 2>/dev/null |
        python3 "$OUT/split.py" >"$OUT/$mode-$round-$i.split.json"
    done
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(d['cases_per_sec'],1), 'cases/s', d['failed'], 'failed')" \
      "$OUT/$mode-$round.json" "$mode" "$round" 2>/dev/null || true
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import glob, json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def split(mode, r):
    cases = max(json.load(open(f"{out}/{mode}-{r}.json"))["cases"], 1)
    total = {}
    for path in sorted(glob.glob(f"{out}/{mode}-{r}-*.split.json")):
        for name, ns in json.load(open(path)).items():
            total[name] = total.get(name, 0) + ns / 1e3 / cases
    return total
med = {}
for mode in ("one", "two"):
    runs = [split(mode, r) for r in range(1, rounds + 1)]
    med[mode] = {k: statistics.median(run.get(k, 0) for run in runs) for k in runs[0]}
    cps = statistics.median(json.load(open(f"{out}/{mode}-{r}.json"))["cases_per_sec"] for r in range(1, rounds + 1))
    print(f"{mode}: {cps:.1f} cases/s (median of {rounds})")
print(f"\n{'µs of node CPU per finished case, all nodes (medians)':56s} {'one':>6s} {'two':>6s} {'added':>6s}")
names = ["all"] + [k for k in med["two"] if k not in ("all", "the rest")] + ["the rest"]
for name in names:
    o, t = med["one"].get(name, 0), med["two"].get(name, 0)
    print(f"{name:56s} {o:6.0f} {t:6.0f} {t - o:+6.0f}")
PY
