"""Results in an S3-compatible bucket (moto's server on loopback), linked through the API or
presigned by the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.images import decode
from tests.utils.jobs import data_uri, edit_body, submit_and_wait
from tests.utils.s3 import S3, start_s3
from tests.utils.servers import create_key, own_server

RGB = np.full((32, 48, 3), 200, np.uint8)
MASK = np.zeros((32, 48), np.uint8)
MASK[8:24, 12:36] = 255


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    server = start_s3()
    yield server
    server.server.stop()


@pytest.mark.parametrize("file_urls", ["api", "presigned"])
def test_results_live_in_the_bucket(tmp_path: Path, backend: str, s3: S3, file_urls: str) -> None:
    bucket = s3.new_bucket()
    with own_server(
        tmp_path / "data",
        backend,
        engine="tests.utils.engines:SleepEngine",
        test_sleep="0.05",
        file_urls=file_urls,
        **s3.settings(bucket),
    ) as server:
        key = create_key(server.env, "s3")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
            job = submit_and_wait(client, edit_body(data_uri(RGB), data_uri(MASK), output_format="png"))
            assert job["status"] == "COMPLETED", job
            url = job["result"]["images"][0]
            stored = s3.keys(bucket)
            outputs = [k for k in stored if k.startswith("ff/outputs/")]
            assert len(outputs) == 1 and outputs[0].endswith(".png")
            # The image and mask, sent as data URIs, were stored there as the account's uploads.
            assert len([k for k in stored if k.startswith("ff/uploads/")]) == 2 == len(stored) - 1
            if file_urls == "presigned":
                assert url.startswith(f"{s3.endpoint}/{bucket}/ff/outputs/") and "X-Amz-Signature" in url
            else:
                assert url.startswith(f"{server.url}/v2/files/")
            download = httpx.get(url)
            assert download.status_code == 200
            out = decode(download.content)
            assert (out[MASK == 0] == RGB[MASK == 0]).all() and (out[MASK == 255] == 128).all()
            upload = client.post("/v2/uploads", files={"file": ("a.png", download.content)}).json()
            assert any(k == f"ff/uploads/{upload['id']}.png" for k in s3.keys(bucket))
            assert client.get(upload["url"]).content == download.content
        assert not (tmp_path / "data" / "files").exists()
