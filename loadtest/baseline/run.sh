#!/usr/bin/env bash
# Installs the baseline's one dependency (ws, pinned in package.json and
# package-lock.json) and starts the server on loopback.
#   loadtest/baseline/run.sh [PORT]      (default 8090, or $PORT)
set -euo pipefail
cd "$(dirname "$0")"
port="${1:-${PORT:-8090}}"
npm install --no-audit --no-fund --loglevel=error
exec node server.js --port "$port"
