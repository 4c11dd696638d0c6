#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes .venv, installs fillframe with its test and
# flux extras (torch pinned to the 2.13.0 CPU build, never an unpinned torch), then runs pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,flux]"
exec .venv/bin/python -m pytest -q "$@"
