"""The playground page in real Chromium against a live server on the default (classic) engine."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from fillframe.imaging.canvas import PRESETS, plan_outpaint
from fillframe.settings import Settings
from tests.utils.images import box_mask, decode, encode, photo
from tests.utils.jobs import data_uri, edit_body, wait_job
from tests.utils.servers import LiveServer
from tests.web.conftest import b64, drop_file, screenshot, stroke_mask

if TYPE_CHECKING:
    from playwright.sync_api import Page

BRUSH = 24


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    rgb = photo("astronaut", (480, 360))
    path = tmp_path_factory.mktemp("web") / "astronaut.png"
    path.write_bytes(encode(rgb))
    return rgb, path


def open_playground(page: Page, live: LiveServer, key: str | None) -> None:
    page.goto(live.url + "/")
    page.wait_for_function("() => document.getElementById('engine-note').textContent.length > 0")
    if key is not None:
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('account').textContent.length > 0")


def set_range(page: Page, selector: str, value: int) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }", value
    )


def paint(page: Page, strokes: list[tuple[tuple[float, float], tuple[float, float]]]) -> None:
    """Drag the mouse along each stroke, given in image pixels, over the mask canvas."""
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    width, height = page.eval_on_selector("#mask-canvas", "c => [c.width, c.height]")
    to_page = lambda x, y: (box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height)  # noqa: E731
    for (x0, y0), (x1, y1) in strokes:
        page.mouse.move(*to_page(x0, y0))
        page.mouse.down()
        for t in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(*to_page(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
        page.mouse.up()


def painted_pixels(page: Page) -> int:
    return page.eval_on_selector(
        "#mask-canvas",
        """c => { const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] >= 128) n++; return n; }""",
    )


def choose_png(page: Page, seed: int) -> None:
    page.click("details.advanced summary")
    page.select_option("#format", "png")
    page.fill("#seed", str(seed))


def wait_result(page: Page) -> tuple[str, str, tuple[int, int]]:
    """(job id, result URL, natural size) once the result is shown."""
    page.wait_for_selector("#result:not([hidden])")
    page.wait_for_function("() => document.getElementById('result-image').naturalWidth > 0")
    job_id = page.get_attribute("#result", "data-job-id")
    url = page.get_attribute("#result-image", "src")
    size = page.eval_on_selector("#result-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert job_id and url
    return job_id, url, (size[0], size[1])


def test_inpaint_two_strokes(
    page: Page, live: LiveServer, api_key: str, astronaut: tuple[np.ndarray, Path]
) -> None:
    rgb, path = astronaut
    open_playground(page, live, api_key)
    assert "classic" in page.inner_text("#engine-note") and "ignores the prompt" in page.inner_text(
        "#engine-note"
    )
    assert "unlimited credits" in page.inner_text("#account")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#editor:not([hidden])")
    assert page.inner_text("#image-info") == "astronaut.png · 480×360"
    set_range(page, "#brush-size", BRUSH)
    strokes = [((90.0, 110.0), (300.0, 130.0)), ((210.0, 250.0), (420.0, 300.0))]
    paint(page, strokes)
    page.fill("#prompt", "a clean orange suit")
    choose_png(page, seed=7)
    page.click("#fill")
    job_id, url, size = wait_result(page)
    screenshot(page, "inpaint")
    assert size == (480, 360)
    assert "480×360 · seed 7" in page.inner_text("#result-info")

    out = decode(httpx.get(url).content)  # a signed link: no key needed
    assert out.shape == rgb.shape
    expected = stroke_mask(rgb.shape[:2], strokes, BRUSH)
    near = cv2.dilate(expected, np.ones((7, 7), np.uint8)) > 0
    core = cv2.erode(expected, np.ones((7, 7), np.uint8)) > 0
    assert np.array_equal(out[~near], rgb[~near])  # nothing changed away from the strokes
    changed = np.abs(out.astype(int) - rgb).sum(axis=2) > 0
    assert changed[core].mean() > 0.5  # and the strokes were repainted

    # The mask the page sent: the image's own size, black and white, the two strokes.
    headers = {"X-API-Key": api_key}
    job = httpx.get(f"{live.url}/v2/jobs/{job_id}", headers=headers).json()
    sent = np.asarray(
        Image.open(
            io.BytesIO(httpx.get(job["input"]["fluxFillParams"]["mask"], headers=headers).content)
        ).convert("L")
    )
    assert sent.shape == (360, 480) and set(np.unique(sent)) == {0, 255}
    on, want = sent == 255, expected == 255
    assert (on & want).sum() / (on | want).sum() > 0.9

    # History shows the job; the before/after slider moves the divider.
    page.wait_for_selector(f".job-card[data-job-id='{job_id}'] .badge.completed")
    set_range(page, "#compare-range", 20)
    assert page.eval_on_selector("#compare", "c => c.style.getPropertyValue('--pos')") == "20%"
    assert page.get_attribute("#download", "href") == url


def test_outpaint_with_a_preset(page: Page, live: LiveServer, api_key: str) -> None:
    rgb = photo("chelsea", (300, 200))
    open_playground(page, live, api_key)
    drop_file(page, encode(rgb), "cat.png")  # dropped like a file from the desktop
    page.wait_for_selector("#editor:not([hidden])")
    page.click(".segmented >> text=Outpaint")
    page.wait_for_selector("#outpaint-preview:not([hidden])")
    plans = {}
    for preset in PRESETS:
        page.click(f".chip[data-preset='{preset}']")
        plan = plan_outpaint(300, 200, preset, Settings().limits.max_output_pixels)
        plans[preset] = plan
        assert page.inner_text("#image-info") == f"cat.png · 300×200 → {plan.width}×{plan.height}"
        assert page.eval_on_selector("#preview-canvas", "c => [c.width, c.height]") == [
            plan.width,
            plan.height,
        ]
    page.click(".chip[data-preset='Right outpaint']")
    page.fill("#prompt", "more of the room")
    choose_png(page, seed=3)
    screenshot(page, "outpaint-preview")
    page.click("#fill")
    _, url, size = wait_result(page)
    screenshot(page, "outpaint")
    plan = plans["Right outpaint"]
    assert size == (plan.width, plan.height)
    out = decode(httpx.get(url).content)
    assert np.array_equal(out[plan.y : plan.y + 200, plan.x : plan.x + 300], rgb)

    page.click("#use-result")
    page.wait_for_function(
        f"() => document.getElementById('image-info').textContent.includes('{plan.width}×{plan.height} →')"
    )
    assert page.inner_text("#image-info").startswith("result-")


def test_outpaint_preview_matches_the_server_geometry(page: Page, live: LiveServer) -> None:
    open_playground(page, live, None)
    cases = [(w, h, p, m) for w, h in [(1, 1), (17, 5), (300, 200), (641, 479), (4000, 3000)] for p in PRESETS
             for m in (4 * 1024 * 1024, 100_000)]  # fmt: skip
    js = page.evaluate(
        """async cases => { const m = await import('/web/outpaint.js');
             return cases.map(([w, h, p, max]) => { const r = m.planOutpaint(w, h, p, max);
               return [r.width, r.height, r.x, r.y, r.imageWidth, r.imageHeight]; }); }""",
        cases,
    )
    for (w, h, preset, max_pixels), got in zip(cases, js, strict=True):
        plan = plan_outpaint(w, h, preset, max_pixels)
        want = [plan.width, plan.height, plan.x, plan.y, plan.image_width, plan.image_height]
        assert got == want, (w, h, preset, max_pixels)


def test_mask_tools(page: Page, live: LiveServer, api_key: str, astronaut: tuple[np.ndarray, Path]) -> None:
    open_playground(page, live, api_key)
    page.set_input_files("#file-input", str(astronaut[1]))
    page.wait_for_selector("#editor:not([hidden])")
    set_range(page, "#brush-size", 30)
    paint(page, [((50, 50), (250, 60))])
    painted = painted_pixels(page)
    assert 200 * 30 < painted < 240 * 40
    page.click("#undo")
    assert painted_pixels(page) == 0
    page.click("#redo")
    assert painted_pixels(page) == painted
    page.click("#invert")
    assert painted_pixels(page) == 480 * 360 - painted
    page.click("#invert")
    assert painted_pixels(page) == painted
    page.click("#eraser")
    assert page.get_attribute("#eraser", "aria-pressed") == "true"
    paint(page, [((50, 55), (150, 55))])
    erased = painted_pixels(page)
    assert 0 < erased < painted * 0.7
    page.keyboard.press("Control+z")
    assert painted_pixels(page) == painted
    page.click("#clear")
    assert painted_pixels(page) == 0
    set_range(page, "#mask-opacity", 30)
    assert page.eval_on_selector("#mask-canvas", "c => c.style.opacity") == "0.3"
    page.fill("#prompt", "x")
    page.click("#fill")
    assert page.inner_text("#error-title") == "Nothing to fill"


def test_failed_job_from_history_shows_its_error_code(
    page: Page, live: LiveServer, client: httpx.Client
) -> None:
    rgb = photo("rocket", (96, 64))
    body = edit_body(data_uri(rgb), mask=data_uri(box_mask(32, 32)), prompt="x")
    job_id = client.post("/v2/images/edit", json=body).json()["jobId"]
    assert wait_job(client, job_id)["errorCode"] == "invalid_input"
    open_playground(page, live, client.headers["X-API-Key"])
    page.click(f".job-card[data-job-id='{job_id}']")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error-title") == "Job failed"
    assert page.inner_text("#error-code") == "invalid_input"
    assert "The mask is 32x32 but the image is 96x64" in page.inner_text("#error-message")


def test_bad_key_is_a_readable_error(
    page: Page, live: LiveServer, astronaut: tuple[np.ndarray, Path]
) -> None:
    open_playground(page, live, None)
    page.click("#fill")
    assert page.inner_text("#error-title") == "No API key"
    open_playground(page, live, "afk_this_key_does_not_exist")
    assert page.inner_text("#account") == "Invalid API key"
    assert "bad" in (page.get_attribute("#account", "class") or "")
    # Pasted from the clipboard.
    page.evaluate(
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], 'a.png', {type: 'image/png'}));
                    const paste = new ClipboardEvent('paste', {clipboardData: dt, bubbles: true});
                    document.dispatchEvent(paste); }""",
        b64(astronaut[1].read_bytes()),
    )
    page.wait_for_selector("#editor:not([hidden])")
    paint(page, [((100, 100), (200, 120))])
    page.fill("#prompt", "anything")
    page.click("#fill")
    page.wait_for_function(
        "() => document.getElementById('error-title').textContent === 'The API key was refused'"
    )
    assert page.inner_text("#error-message") == "Invalid API key"
    assert page.inner_text("#error-code") == "HTTP 401"
    assert page.is_hidden("#progress") and page.is_enabled("#fill")
    screenshot(page, "bad-key")
