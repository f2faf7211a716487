#!/usr/bin/env bash
# Whole cases of one company on a cluster, side by side in one run: one
# node with all the traffic, the same load over two nodes, and over three
# (each case's agent on one node and its customer on the next); modes
# alternated, ROUNDS rounds (3 by default), a fresh Redis data set and
# fresh nodes per run. Loopback only; every run is bounded.
#
#   loadtest/scripts/cluster-lifecycle.sh                 # 16 cases in flight, 10 s per run
#   CONCURRENCY=32 ROUNDS=5 loadtest/scripts/cluster-lifecycle.sh
#   BROKER=/path/to/another/casebroker loadtest/scripts/cluster-lifecycle.sh   # another build
#   MODES="one two two-linked three three-linked" loadtest/scripts/cluster-lifecycle.sh
#
# MODES lists the runs of each round (by default "one two three"): one,
# two or three nodes, "-linked" for nodes with direct links between them
# ([cluster] link), "-shared" for nodes that share the machine's cores out
# (each runs cores / nodes worker threads, at least one: `workers`);
# LINKS=1 links every mode. E.g. MODES="one two-linked two-linked-shared".
#
# Needs redis-server and release builds (cargo build --release -p casebroker
# -p casebroker-loadtest). Prints one line per run (mode, round, cases/s,
# p99 ms of a whole case, failed) and then the medians and the ratios to
# the first mode, step by step, with per case Redis's commands, bytes and
# CPU, the nodes' CPU, and the nodes' and Redis's context switches; the
# JSON reports and node logs go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
OUT=${OUT:-target/cluster-lifecycle}
REDIS_PORT=${REDIS_PORT:-16398}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-16}
MODES=${MODES:-one two three}
ALL_LINKED=${LINKS:-}
mkdir -p "$OUT"
start_redis --appendonly yes --appendfsync everysec
redis_pid() { redis-cli -p "$REDIS_PORT" info server | awk -F: '/^process_id:/{print $2+0}'; }
# The context switches so far of the given processes together, every
# thread's, voluntary or not.
switches() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(non)?voluntary_ctxt_switches:/{s+=$2} END{print s+0}'
}

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    settle
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $mode in one*) n=1 ;; two*) n=2 ;; three*) n=3 ;; *) echo "unknown mode $mode" >&2; exit 2 ;; esac
    case $mode in *-linked*) LINKS=1 ;; *) LINKS=$ALL_LINKED ;; esac
    case $mode in *-shared) NODE_WORKERS=$(($(nproc) > n ? $(nproc) / n : 1)) ;; *) NODE_WORKERS= ;; esac
    lifecycle_nodes "$n" "$round"
    report="$OUT/$mode-$round.json"
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    cpu0=$(redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/{s+=$2} END{print s}')
    # Context switches of the nodes and of Redis over the run (a count
    # the machine's noise hardly moves, unlike CPU time).
    # shellcheck disable=SC2086
    cs0="$(switches $pids) $(switches "$(redis_pid)")"
    "$LT" lifecycle --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_RUN" \
      "${args[@]}" --no-progress --json "$report" >/dev/null || echo "$mode $round: the run reported failures"
    # Redis's work in the run: commands, bytes in and out, CPU seconds.
    redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/$mode-$round.redis-commands"
    redis-cli -p "$REDIS_PORT" info stats >"$OUT/$mode-$round.redis-stats"
    cpu1=$(redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/{s+=$2} END{print s}')
    echo "$cpu0 $cpu1" >"$OUT/$mode-$round.redis-cpu"
    # shellcheck disable=SC2086
    cs1="$(switches $pids) $(switches "$(redis_pid)")"
    echo "$cs0 $cs1" >"$OUT/$mode-$round.switches"
    # Each node's CPU seconds and resident memory.
    : >"$OUT/$mode-$round.nodes"
    # shellcheck disable=SC2086
    for pid in $pids; do
      awk -v t="$(getconf CLK_TCK)" '{print "cpu_s", ($14+$15)/t}' "/proc/$pid/stat" >>"$OUT/$mode-$round.nodes"
      awk '/^VmRSS:/{print "rss_kb", $2}' "/proc/$pid/status" >>"$OUT/$mode-$round.nodes"
    done
    # Commands forwarded and leases taken, summed over the nodes.
    fwd=0; leases=0
    for port in 8081 8082 8083; do
      m=$(curl -sf "127.0.0.1:$port/metrics" 2>/dev/null || true)
      f=$(echo "$m" | awk '/^casebroker_cluster_forwarded_total /{print $2}')
      l=$(echo "$m" | awk '/^casebroker_cluster_leases_taken_total /{print $2}')
      fwd=$((fwd + ${f:-0})); leases=$((leases + ${l:-0}))
    done
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $pids 2>/dev/null || true
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(d['cases_per_sec'],1), d['p99_ms'], d['failed'], 'forwarded', sys.argv[4], 'leases', sys.argv[5])" \
      "$report" "$mode" "$round" "$fwd" "$leases" 2>/dev/null || true
  done
done

python3 - "$OUT" "$ROUNDS" $MODES <<'PY'
import json, statistics, sys
out, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def runs(mode):
    return [json.load(open(f"{out}/{mode}-{r}.json")) for r in range(1, rounds + 1)]
base = runs(modes[0])
b = statistics.median(d["cases_per_sec"] for d in base)
for mode in modes:
    rs = runs(mode)
    m = statistics.median(d["cases_per_sec"] for d in rs)
    pairs = " · ".join(f"{o['cases_per_sec'] / x['cases_per_sec']:.3f}" for x, o in zip(base, rs))
    failed = sum(d["failed"] for d in rs)
    print(f"{mode}: cases/s {m:.1f} ({' · '.join(str(round(d['cases_per_sec'], 1)) for d in rs)}), /{modes[0]} {m / b:.3f} (pairs {pairs}), failed {failed}")
    steps = rs[0]["steps"].keys()
    print("   p99 ms: " + ", ".join(f"{s} {statistics.median(d['steps'][s]['p99_ms'] for d in rs)}" for s in steps))
    # Per finished case: Redis commands by name, Redis bytes in and out
    # and CPU, the nodes' CPU, the nodes' and Redis's context switches;
    # the nodes' memory at the end.
    per = {"calls": [], "in": [], "out": [], "redis_cpu_us": [], "node_cpu_us": [], "rss_mb": [],
           "node_cs": [], "redis_cs": []}
    names = {}
    for r, d in enumerate(rs, 1):
        cases = max(d["cases"], 1)
        calls = 0
        for line in open(f"{out}/{mode}-{r}.redis-commands"):
            if line.startswith("cmdstat_"):
                name, rest = line.strip()[8:].split(":", 1)
                n = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
                calls += n
                names.setdefault(name, []).append(n / cases)
        stats = dict(l.strip().split(":", 1) for l in open(f"{out}/{mode}-{r}.redis-stats") if ":" in l)
        c0, c1 = map(float, open(f"{out}/{mode}-{r}.redis-cpu").read().split())
        nodes = [l.split() for l in open(f"{out}/{mode}-{r}.nodes")]
        per["calls"].append(calls / cases)
        per["in"].append(int(stats["total_net_input_bytes"]) / cases)
        per["out"].append(int(stats["total_net_output_bytes"]) / cases)
        per["redis_cpu_us"].append((c1 - c0) * 1e6 / cases)
        per["node_cpu_us"].append(sum(float(v) for k, v in nodes if k == "cpu_s") * 1e6 / cases)
        per["rss_mb"].append(max(int(v) for k, v in nodes if k == "rss_kb") / 1024)
        n0, r0, n1, r1 = map(int, open(f"{out}/{mode}-{r}.switches").read().split())
        per["node_cs"].append((n1 - n0) / cases)
        per["redis_cs"].append((r1 - r0) / cases)
    med = {k: statistics.median(v) for k, v in per.items()}
    top = sorted(names.items(), key=lambda kv: -statistics.median(kv[1]))[:6]
    print(f"   per case: Redis {med['calls']:.1f} commands ({', '.join(f'{n} {statistics.median(v):.1f}' for n, v in top)}), "
          f"{med['in']:.0f} B in, {med['out']:.0f} B out, {med['redis_cpu_us']:.0f} µs Redis CPU, "
          f"{med['node_cpu_us']:.0f} µs node CPU (all nodes); context switches {med['node_cs']:.1f} on the nodes, "
          f"{med['redis_cs']:.1f} in Redis; largest node RSS {med['rss_mb']:.0f} MB")
PY
