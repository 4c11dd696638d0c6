#!/usr/bin/env bash
# Lint and types, as CI runs them before the tests: ruff's lint and format check over the Python
# code, and mypy --strict on fillframe/ (its settings are in pyproject.toml). Installs .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/venv.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check fillframe clients tests bench scripts
.venv/bin/mypy
