#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document (proto/openapi.json,
# served at /v1/openapi.json) with schemathesis: a broker on a free loopback
# port with a test config, every operation with a bounded number of
# examples, and the checks that no answer is a 5xx and that every status,
# content type and body is one the document describes. Loopback only.
#
#   .ci/schemathesis.sh            the bounded run CI does (a few minutes)
#   EXAMPLES=200 SEED=7 .ci/schemathesis.sh   more examples, another seed
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=$PWD/target/schemathesis-venv
EXAMPLES=${EXAMPLES:-40}

# schemathesis from PyPI, pinned, in a venv of its own under target/. A
# fresh Debian has python3 but may lack venv and pip.
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  if ! command -v python3 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3
  fi
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$VERSION"
fi

cargo build --quiet --bin casebroker

WORK=$(mktemp -d)
BROKER=""
cleanup() {
  if [ -n "$BROKER" ]; then
    kill "$BROKER" 2>/dev/null || true
    wait "$BROKER" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The agent token is an admin's, so the admin API is reached; the operator
# token is the operator's. Help requests are not rate limited here: the
# fuzzer sends many from one address.
AGENT=alice-token-0001
OPERATOR=operator-token-000001
cat >"$WORK/casebroker.toml" <<EOF
in_memory = true
operator_token = "$OPERATOR"
help_per_ip_per_minute = 1000000
help_per_module_per_minute = 1000000

[[companies]]
id = "acme"
name = "ACME"
groups = [{ id = "support" }, { id = "sales" }]

[[companies.agents]]
id = "alice"
name = "Alice"
token = "$AGENT"
groups = ["support", "sales"]
admin = true

[[companies.agents]]
id = "bob"
name = "Bob"
token = "bob-token-00002"
groups = ["support"]

[[companies.modules]]
key = "acme-qs"
group = "support"
EOF

# Port 0: the broker takes a free port and says which in its log.
target/debug/casebroker --config "$WORK/casebroker.toml" --listen 127.0.0.1:0 \
  >"$WORK/broker.log" 2>&1 &
BROKER=$!
ADDR=""
for _ in $(seq 100); do
  ADDR=$(grep -o 'casebroker listening.*addr=[0-9.:]*' "$WORK/broker.log" | grep -o '[0-9.]*:[0-9]*$' || true)
  [ -n "$ADDR" ] && break
  kill -0 "$BROKER" 2>/dev/null || { cat "$WORK/broker.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "schemathesis.sh: the broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1; }
echo "== schemathesis $VERSION against http://$ADDR ($EXAMPLES examples per operation)"

# Each security scheme of the document gets its own token.
cat >"$WORK/schemathesis.toml" <<EOF
[auth.openapi.agentToken]
bearer = "$AGENT"

[auth.openapi.operatorToken]
bearer = "$OPERATOR"
EOF

# Not checked: positive_data_acceptance, since a request the schema allows
# may still name a group or agent that does not exist (400), and
# negative_data_rejection, since an over-long field is 413 `too_large` by
# the contract, where schemathesis wants 400. CHECKS=all shows them.
# Run from the scratch directory: schemathesis keeps a cache of its
# findings in the working directory, and none belongs in the tree.
status=0
cd "$WORK"
"$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run \
  "http://$ADDR/v1/openapi.json" \
  --checks "${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$EXAMPLES" \
  --seed "${SEED:-1}" \
  --workers 1 \
  --request-timeout 10 \
  --suppress-health-check all \
  --no-color || status=$?

if [ "$status" -ne 0 ]; then
  echo "schemathesis.sh: failures above; the broker's log:" >&2
  tail -n 50 "$WORK/broker.log" >&2
fi
exit "$status"
