"""What both drivers share: where the server is, the key, the policies, and how a `Send`
becomes httpx's request arguments."""

from __future__ import annotations

import os
from typing import Any

from fillframe_client._version import __version__
from fillframe_client.retry import PollPolicy, RetryPolicy
from fillframe_client.steps import Send

USER_AGENT = f"fillframe-python/{__version__}"


class BaseClient:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        max_retries: int,
        max_retry_wait: float,
        poll: PollPolicy | None,
    ) -> None:
        base_url = base_url or os.environ.get("FILLFRAME_SERVER")
        if not base_url:
            raise ValueError("Give the server's base URL, or set FILLFRAME_SERVER.")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("FILLFRAME_API_KEY")
        self.retry = RetryPolicy(max_retries=max_retries, max_retry_wait=max_retry_wait)
        self.poll = poll or PollPolicy()

    def _request_args(self, send: Send) -> dict[str, Any]:
        absolute = send.path.startswith(("http://", "https://"))
        headers = {"User-Agent": USER_AGENT, **send.headers}
        # Result links are signed; never hand the key to whatever host a URL names.
        if send.auth and not absolute and self.api_key:
            headers["X-API-Key"] = self.api_key
        return {
            "method": send.method,
            "url": send.path if absolute else self.base_url + send.path,
            "params": send.params,
            "json": send.json,
            "files": send.files,
            "headers": headers,
        }
