"""The docs tell the truth: the README's settings table is the Settings class, and CI runs the
README's test command."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from settings_table import table  # noqa: E402


def test_readme_settings_table_matches_the_settings_class() -> None:
    assert table() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/test.sh      # the whole test suite" in readme
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    # Lint and types first, then the tests, then the container image.
    assert ci[-3:] == ["./scripts/lint.sh", "./scripts/test.sh", "./scripts/image.sh"]
