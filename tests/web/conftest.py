"""Real Chromium (Debian's /usr/bin/chromium) driven by Playwright against a live server."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # only where the test extra is missing; CI installs it
    sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("FILLFRAME_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


def _require_browser() -> None:
    """Skip on a machine without Chromium or Playwright, but never in CI, where they must be there."""
    problem = None
    if sync_playwright is None:
        problem = "Playwright for Python is not installed (pip install playwright)"
    elif not CHROMIUM.exists():
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if problem:
        if os.environ.get("CI"):
            raise RuntimeError(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def backend() -> str:
    """The page only speaks the public API, which tests/api runs on both databases; one is enough."""
    return "sqlite"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _require_browser()
    assert sync_playwright is not None
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh profile per test (empty storage); uncaught script errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stroke_mask(
    shape: tuple[int, int], strokes: list[tuple[tuple[float, float], tuple[float, float]]], size: int
) -> np.ndarray:
    """HxW uint8, 255 under straight strokes of width `size` with round ends (what the brush paints)."""
    mask = np.zeros(shape, np.uint8)
    for (x0, y0), (x1, y1) in strokes:
        cv2.line(mask, (round(x0), round(y0)), (round(x1), round(y1)), 255, thickness=size)
        cv2.circle(mask, (round(x0), round(y0)), size // 2, 255, -1)
        cv2.circle(mask, (round(x1), round(y1)), size // 2, 255, -1)
    return mask


def drop_file(page: Page, data: bytes, name: str, target: str = "stage") -> None:
    """Drop `data` on the element with id `target`, as a file dragged from the desktop."""
    page.evaluate(
        """([b64, name, target]) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], name, {type: 'image/png'}));
                    const drop = new DragEvent('drop', {dataTransfer: dt, bubbles: true});
                    document.getElementById(target).dispatchEvent(drop); }""",
        [b64(data), name, target],
    )
