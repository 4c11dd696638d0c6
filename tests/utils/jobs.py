"""Submitting and waiting on jobs over HTTP, as a client would."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np

from tests.utils import poll
from tests.utils.images import encode

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def data_uri(array: np.ndarray, fmt: str = "PNG") -> str:
    mime = "jpeg" if fmt.upper() == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(encode(array, fmt)).decode()


def edit_body(image: str, mask: str | None = None, prompt: str = "fill it", **params: Any) -> dict[str, Any]:
    fill: dict[str, Any] = {"image": image, **params}
    if mask is not None:
        fill["mask"] = mask
    return {"prompt": prompt, "model": "flux-fill-pro", "fluxFillParams": fill}


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60.0, until: set[str] | None = None) -> dict:
    """Poll the job until its status is one of `until` (default: any end); returns the job."""
    ends = until or TERMINAL
    seen: list[str] = []

    def ended() -> dict | None:
        job = client.get(f"/v2/jobs/{job_id}").json()
        seen[:] = [job["status"]]
        return job if job["status"] in ends else None

    try:
        return poll.until(ended, f"job {job_id} in {sorted(ends)}", timeout)
    except TimeoutError:
        raise TimeoutError(f"job {job_id} still {seen[0]} after {timeout:g} s") from None


def submit_and_wait(client: httpx.Client, body: dict[str, Any], timeout: float = 60.0) -> dict:
    response = client.post("/v2/images/edit", json=body)
    assert response.status_code == 202, response.text
    return wait_job(client, response.json()["jobId"], timeout)
