#!/usr/bin/env bash
# Starts Fillframe on the embedded defaults (SQLite and a local folder under ./fillframe-data):
# makes .venv, installs fillframe, applies migrations and serves on http://127.0.0.1:8000.
# Extra arguments go to `fillframe serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ./clients/python -e .  # the client is not on PyPI
exec .venv/bin/fillframe serve "$@"
