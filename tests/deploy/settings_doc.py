"""docs/deploy.md's table of what each process needs, read by the compose and Kubernetes tests."""

from __future__ import annotations

import re
from pathlib import Path

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
# The table's row "FILLFRAME_ENGINE ... and the engine's own settings" covers these.
ENGINE_SETTINGS = ("FILLFRAME_FLUX_", "FILLFRAME_BFL_")


def doc_table() -> dict[str, tuple[str, str]]:
    """docs/deploy.md's "What each process needs": setting -> (API processes, workers)."""
    text = DEPLOY_DOC.read_text()
    table = text[text.index("| setting | API processes | workers |") :].split("\n\n")[0]
    needs: dict[str, tuple[str, str]] = {}
    for row in table.splitlines()[2:]:
        setting, api, worker = (cell.strip() for cell in row.strip("|").split("|"))
        names = re.findall(r"FILLFRAME_\w+", setting) + [
            f"FILLFRAME_{n}" for n in re.findall(r"`(S3_\w+)`", setting)
        ]
        assert names, row
        for name in names:
            needs[re.sub(r"=.*", "", name)] = (api, worker)
    return needs
