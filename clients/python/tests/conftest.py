"""Fixtures for the client's own tests, which need nothing but the client, httpx and pytest.

Live tests need a running Fillframe server on its `sleep` test engine (it paints the mask
mid-grey): FILLFRAME_TEST_SERVER (base URL) and FILLFRAME_TEST_API_KEY (a key with credits).
Without them the live tests are skipped, unless FILLFRAME_TEST_REQUIRE_LIVE=1 (Fillframe's own
suite sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fillframe_client import Fillframe
from support import Files, Live, png


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("client-files")
    width, height = 64, 48
    image = root / "gradient.png"
    image.write_bytes(png(width, height, lambda x, y: (x * 4, y * 5, 90)))
    mask = root / "mask.png"
    mask.write_bytes(png(width, height, lambda x, y: 255 if 16 <= x < 48 and 12 <= y < 36 else 0))
    small = root / "small-mask.png"
    small.write_bytes(png(32, 24, lambda x, y: 255))
    return Files(image, mask, small, (width, height))


@pytest.fixture(scope="session")
def live() -> Live:
    url, key = os.environ.get("FILLFRAME_TEST_SERVER"), os.environ.get("FILLFRAME_TEST_API_KEY")
    if not url or not key:
        message = "set FILLFRAME_TEST_SERVER and FILLFRAME_TEST_API_KEY to run the live tests"
        if os.environ.get("FILLFRAME_TEST_REQUIRE_LIVE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return Live(url, key)


@pytest.fixture(scope="session")
def ff(live: Live) -> Iterator[Fillframe]:
    with Fillframe(live.url, live.api_key) as client:
        yield client
