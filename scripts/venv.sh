#!/usr/bin/env bash
# Makes (or brings up to date) ./.venv with fillframe, its Python client and the test and flux
# extras: torch pinned to the 2.13.0 CPU build first, never an unpinned torch. scripts/test.sh and
# scripts/lint.sh both start here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# fillframe-client is not on PyPI: naming the checkout's copy in the same command satisfies
# fillframe's dependency on it.
.venv/bin/python -m pip install -q -e ./clients/python -e ".[test,flux]"
