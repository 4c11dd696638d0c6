"""Free expansion (fluxFillParams.expand) in the playground, in real Chromium, classic engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import numpy as np

from fillframe.imaging.canvas import Expansion, plan_expand
from fillframe.settings import Settings
from tests.utils.images import decode, encode, photo
from tests.utils.servers import LiveServer
from tests.web.conftest import drop_file, screenshot
from tests.web.test_playground import choose_png, open_playground, wait_result

if TYPE_CHECKING:
    from playwright.sync_api import Page


def set_side(page: Page, side: str, value: int) -> None:
    page.fill(f"#expand-{side}", str(value))
    page.dispatch_event(f"#expand-{side}", "input")


def test_expand_in_the_playground(page: Page, live: LiveServer, api_key: str) -> None:
    rgb = photo("chelsea", (300, 200))
    open_playground(page, live, api_key)
    drop_file(page, encode(rgb), "cat.png")
    page.wait_for_selector("#editor:not([hidden])")
    page.click(".segmented >> text=Outpaint")
    assert page.is_hidden("#expand-tools")
    page.click(".chip[data-preset='Custom']")
    page.wait_for_selector("#expand-tools:not([hidden])")
    sides = {"left": 0, "right": 120, "top": 40, "bottom": 0}
    for side, value in sides.items():
        set_side(page, side, value)
    plan = plan_expand(300, 200, Expansion(**sides), Settings().limits.max_output_pixels)
    assert page.inner_text("#image-info") == f"cat.png · 300×200 → {plan.width}×{plan.height}"
    assert page.eval_on_selector("#preview-canvas", "c => [c.width, c.height]") == [plan.width, plan.height]

    page.fill("#prompt", "more of the room")
    choose_png(page, seed=5)
    screenshot(page, "expand-preview")
    page.click("#fill")
    job, url, size = wait_result(page)
    screenshot(page, "expand")
    assert size == (plan.width, plan.height)
    out = decode(httpx.get(url).content)
    assert np.array_equal(out[plan.y : plan.y + 200, plan.x : plan.x + 300], rgb)
    with httpx.Client(base_url=live.url, headers={"X-API-Key": api_key}) as client:
        stored = client.get(f"/v2/jobs/{job}").json()["input"]["fluxFillParams"]
    assert stored["mode"] == "outpaint" and stored["expand"] == sides and "outpaint" not in stored

    for side in sides:
        set_side(page, side, 0)
    page.click("#fill")
    assert page.inner_text("#error-title") == "Nothing to add"


def test_expand_preview_matches_the_server_geometry(page: Page, live: LiveServer) -> None:
    open_playground(page, live, None)
    sides = [
        Expansion(left=256),
        Expansion(right=1, bottom=2048),
        Expansion(7, 9, 11, 13),
        Expansion(top=2048),
    ]
    cases = [(w, h, e, m) for w, h in [(1, 1), (17, 5), (300, 200), (641, 479), (4000, 3000)] for e in sides
             for m in (4 * 1024 * 1024, 100_000)]  # fmt: skip
    js = page.evaluate(
        """async cases => { const m = await import('/web/outpaint.js');
             return cases.map(([w, h, s, max]) => { const r = m.planExpand(w, h, s, max);
               return [r.width, r.height, r.x, r.y, r.imageWidth, r.imageHeight]; }); }""",
        [(w, h, vars(e), m) for w, h, e, m in cases],
    )
    for (w, h, expansion, max_pixels), got in zip(cases, js, strict=True):
        plan = plan_expand(w, h, expansion, max_pixels)
        want = [plan.width, plan.height, plan.x, plan.y, plan.image_width, plan.image_height]
        assert got == want, (w, h, expansion, max_pixels)
