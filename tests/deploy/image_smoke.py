"""The image's smoke test client: the seed page's request, end to end, against `fillframe serve`.

scripts/image.sh runs this file with the image's own Python (inside the mounted image), so it
uses only what the image has: httpx, Pillow and numpy. There is no internet there: the photo is
made here and served from a loopback port (the server runs with FILLFRAME_ALLOW_PRIVATE_URLS),
and the mask goes in as an upload. Usage: python3 image_smoke.py BASE_URL KEY
"""

from __future__ import annotations

import functools
import http.server
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 512, 384
DEADLINE_SECONDS = 120


def photo() -> bytes:
    """A JPEG with texture everywhere (stripes over a gradient), so a fill has something to copy."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    rgb = np.stack([x / WIDTH * 255, y / HEIGHT * 255, 128 + 100 * np.sin(x / 6) * np.cos(y / 9)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def mask() -> bytes:
    """A white box (the area to fill) over a tenth of the frame."""
    mask_u8 = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask_u8[150:270, 200:360] = 255
    buf = io.BytesIO()
    Image.fromarray(mask_u8).save(buf, "PNG")
    return buf.getvalue()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_folder(folder: Path) -> str:
    """Serves `folder` on a loopback port, the way a user's own image host would; returns its URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def fail(message: str) -> None:
    print(f"smoke test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 60
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = client.get("/readyz")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.TransportError as exc:
            last = str(exc)
        time.sleep(0.25)
    fail(f"/readyz never answered 200 within 60 s (last: {last})")


def main(base_url: str, key: str) -> None:
    folder = Path(tempfile.mkdtemp())
    (folder / "photo.jpg").write_bytes(photo())
    images = serve_folder(folder)
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
        wait_ready(client)
        upload = client.post("/v2/uploads", files={"file": ("mask.png", mask(), "image/png")})
        if upload.status_code >= 300:
            fail(f"upload: {upload.status_code} {upload.text}")
        # The seed page's request, with our image and mask.
        submitted = client.post(
            "/v2/images/edit",
            json={
                "prompt": "a sleek silver sports car on a coastal highway at sunset, hyper-realistic",
                "model": "flux-fill-pro",
                "fluxFillParams": {
                    "image": f"{images}/photo.jpg",
                    "mode": "inpaint",
                    "mask": upload.json()["url"],
                    "outpaint": "Zoom out 1.5x",
                },
            },
        )
        print("submitted:", submitted.status_code, submitted.json())
        if submitted.status_code >= 300 or submitted.json().get("status") != "QUEUED":
            fail("the submit was not accepted as QUEUED")
        job_id = submitted.json()["jobId"]
        deadline = time.monotonic() + DEADLINE_SECONDS
        job = client.get(f"/v2/jobs/{job_id}").json()
        while job["status"] not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = client.get(f"/v2/jobs/{job_id}").json()
        print("job:", job)
        if job["status"] != "COMPLETED":
            fail(f"the job ended {job['status']} (waited up to {DEADLINE_SECONDS} s)")
        download = client.get(job["result"]["images"][0])
        if download.status_code != 200:
            fail(f"the result did not download: {download.status_code} {download.text}")
        result = np.asarray(Image.open(io.BytesIO(download.content)).convert("RGB")).astype(int)
        # `mode: inpaint` keeps the canvas (the seed page's `outpaint` applies to outpaint mode).
        if result.shape != (HEIGHT, WIDTH, 3):
            fail(f"the result is {result.shape[1]}x{result.shape[0]}, expected {WIDTH}x{HEIGHT}")
        source = np.asarray(Image.open(folder / "photo.jpg").convert("RGB")).astype(int)
        hole = np.asarray(Image.open(io.BytesIO(mask()))) > 0
        kept_error = np.abs(result[~hole] - source[~hole]).mean()
        hole_change = np.abs(result[hole] - source[hole]).mean()
        # The kept area within JPEG's re-encoding error; the hole really filled.
        if kept_error > 2.0 or hole_change < 2.0:
            fail(f"outside the mask {kept_error:.2f} levels off the input, inside {hole_change:.2f}")
        print(
            f"result: {download.headers['content-type']}, {WIDTH}x{HEIGHT}, {len(download.content)} bytes "
            f"(engine: {job.get('engine')}); "
            f"kept area {kept_error:.2f} levels off the input, hole changed by {hole_change:.2f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
