#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine. It installs what the suite needs: Debian's
# Chromium for the playground tests (when missing, via apt-get), a .venv with fillframe, its client
# and its test and flux extras (scripts/venv.sh: torch pinned to the 2.13.0 CPU build); it starts
# the local PostgreSQL server (127.0.0.1:5432, trust auth) if it is down and makes a fresh database
# for this run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
if [ -z "${FILLFRAME_TEST_PG:-}" ]; then
  run_db="fillframe_test_run_$(date +%s)_$$"
  psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE \"$run_db\""
  trap 'psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS \"$run_db\" WITH (FORCE)" || true' EXIT
  export FILLFRAME_TEST_PG="postgresql://postgres@127.0.0.1:5432/$run_db"
fi

./scripts/venv.sh
.venv/bin/python -m pytest -q "$@"
