# Shared by the side-by-side fan-out scripts (sourced, not run): the
# binaries and config, the run's size from the environment, and helpers.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LT=target/release/casebroker-loadtest
BROKER=target/release/casebroker
CFG=loadtest/casebroker-load.toml
DASHBOARDS=${DASHBOARDS:-1000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RATE_ARGS=()
if [ -n "${RATE:-}" ]; then RATE_ARGS=(--rate "$RATE"); fi

# Tens of thousands of sockets in TIME_WAIT slow connect down: wait them out.
settle() { while [ "$(ss -tan state time-wait | wc -l)" -gt 2000 ]; do sleep 1; done; }
# Waits until the broker on each of the given loopback ports answers /healthz.
healthy() { for port in "$@"; do for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done; done; }
