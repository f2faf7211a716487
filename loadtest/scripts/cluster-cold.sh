#!/usr/bin/env bash
# What the first command for a company costs on a node that holds nothing
# of it. Node a holds the company with CASES open cases (made by
# queue-depth's fill) and has written its image; node b lets companies go
# after a second unused (company_idle = "1s"). Each round waits until b
# has let the company go, then times b's first read of it (b loads the
# image and the log after it from Redis) and the read right after (in
# memory), and notes b's resident memory with the company loaded and once
# let go again. Loopback only; bounded by CASES and ROUNDS.
#
#   loadtest/scripts/cluster-cold.sh                 # 100,000 cases, 3 rounds
#   CASES=10000 ROUNDS=5 loadtest/scripts/cluster-cold.sh
#
# (queue-depth's measuring second adds cases of its own: the count printed
# is of the codes in Redis.) Needs redis-server, curl and release builds (cargo
# build --release -p casebroker -p casebroker-loadtest). Prints one line
# per round (round, first read ms, next read ms, b's resident KB before,
# loaded, let go) and the medians; node logs go to $OUT.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
OUT=${OUT:-target/cluster-cold}
REDIS_PORT=${REDIS_PORT:-16399}
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-100000}
TOKEN=load-admin-token
mkdir -p "$OUT"
start_redis --appendonly no

# The load config with images every 2 s and a cluster table.
cfg="$OUT/casebroker.toml"
{
  echo 'snapshot_interval = "2s"'
  cat "$CFG"
  printf '\n[cluster]\nredis_url = "redis://127.0.0.1:%s"\ncompany_idle = "1s"\n' "$REDIS_PORT"
} >"$cfg"
"$BROKER" --config "$cfg" --node-id a --listen 127.0.0.1:8091 >"$OUT/a.log" 2>&1 &
pids="$!"
healthy 8091
"$BROKER" --config "$cfg" --node-id b --listen 127.0.0.1:8092 >"$OUT/b.log" 2>&1 &
b_pid=$!
pids="$pids $b_pid"
healthy 8092

echo "filling the company with $CASES cases through node a"
"$LT" queue-depth --url ws://127.0.0.1:8091/v1/ws --cases "$CASES" --waiting 0 \
  --seconds 1 --no-progress >"$OUT/fill.txt"

head_key='casebroker:{load}:head'
image_key='casebroker:{load}:image-at'
# Until a's image stands at the log's head: a cold load reads the image.
for _ in $(seq 600); do
  head=$(redis-cli -p "$REDIS_PORT" get "$head_key")
  at=$(redis-cli -p "$REDIS_PORT" get "$image_key")
  [ -n "$at" ] && [ "$at" = "$head" ] && break
  sleep 0.1
done
echo "log head $head, image at ${at:-none}"
# What the names of the cases cost in Redis (casebroker:where:<n>).
names=0; bytes=0
for n in $(seq 0 63); do
  names=$((names + $(redis-cli -p "$REDIS_PORT" hlen "casebroker:where:$n")))
  used=$(redis-cli -p "$REDIS_PORT" memory usage "casebroker:where:$n" samples 0)
  bytes=$((bytes + ${used:-0}))
done
echo "names in Redis: $names in 64 hashes, $bytes bytes ($((bytes / (names > 0 ? names : 1))) B a name)" | tee "$OUT/names.txt"

loaded() { curl -sf 127.0.0.1:8092/metrics | awk '/^casebroker_cluster_companies_loaded /{print $2}'; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$b_pid/status"; }
read_ms() {
  curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $TOKEN" \
    127.0.0.1:8092/v1/agents | awk '{printf "%.1f", $1 * 1000}'
}
wait_let_go() {
  for _ in $(seq 300); do [ "$(loaded)" = "0" ] && return; sleep 0.1; done
  echo "node b never let the company go" >&2; exit 1
}

: >"$OUT/rounds.txt"
for round in $(seq "$ROUNDS"); do
  wait_let_go
  rss_cold=$(rss_kb)
  cold=$(read_ms)
  warm=$(read_ms)
  rss_loaded=$(rss_kb)
  wait_let_go
  rss_after=$(rss_kb)
  echo "$round $cold $warm $rss_cold $rss_loaded $rss_after" | tee -a "$OUT/rounds.txt"
done
python3 - "$OUT/rounds.txt" "$names" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
print(f"{sys.argv[2]} cases (their codes in Redis), {len(rows)} rounds (medians): first read on b {med(1):.1f} ms "
      f"(loads the company), next read {med(2):.1f} ms; b's resident memory "
      f"{med(3)/1024:.0f} MB without it, {med(4)/1024:.0f} MB with it, "
      f"{med(5)/1024:.0f} MB once let go")
PY
