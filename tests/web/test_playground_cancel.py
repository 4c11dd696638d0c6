"""The page while a job runs: progress, then Cancel (on the slow `sleep` test engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.utils.images import encode, photo
from tests.utils.servers import LiveServer
from tests.web.conftest import screenshot
from tests.web.test_playground import open_playground, paint

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Page

# 20 progress steps over 30 s: the job is surely still running when Cancel is pressed.
LIVE_SETTINGS = {"engine": "tests.utils.engines:SleepEngine", "test_sleep": "30"}


def test_progress_then_cancel(page: Page, live: LiveServer, api_key: str, tmp_path: Path) -> None:
    path = tmp_path / "coffee.png"
    path.write_bytes(encode(photo("coffee", (400, 266))))
    open_playground(page, live, api_key)
    assert page.inner_text("#engine-note") == "Engine: tests.utils.engines:SleepEngine."
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#editor:not([hidden])")
    paint(page, [((100, 100), (300, 150))])
    page.fill("#prompt", "a cup of tea")
    page.click("#fill")
    page.wait_for_function(
        "() => document.getElementById('progress-label').textContent === 'Filling'"
        " && parseInt(document.getElementById('progress-pct').textContent) >= 5"
    )
    assert page.is_disabled("#fill") and page.is_visible("#cancel")
    width = page.eval_on_selector("#progress-bar", "b => parseFloat(b.style.width)")
    assert width >= 5
    screenshot(page, "progress")
    page.click("#cancel")
    page.wait_for_function("() => document.getElementById('error-title').textContent === 'Cancelled'")
    assert page.inner_text("#error-code") == "cancelled"
    assert page.is_enabled("#fill") and page.is_hidden("#cancel") and page.is_hidden("#progress")
    page.wait_for_selector(".job-card .badge.cancelled")
    assert page.is_hidden("#result")
