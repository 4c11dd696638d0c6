"""A scriptable reverse proxy on loopback, standing where a load balancer would: it forwards to a
live server, except for requests it was told to answer itself (a 429 or 503, as gateways and
overloaded servers do), and records every request it sees."""

from __future__ import annotations

import http.server
import threading
from collections import deque
from dataclasses import dataclass, field

import httpx

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    answered_by: str  # "gateway" or "upstream"


@dataclass
class Rule:
    method: str
    path_prefix: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error": "Busy; retry later."}'
    forward: bool = False  # pass the request on anyway, then answer `status` (a lost reply)


class Gateway:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: deque[Rule] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=60)
        handler = type("Handler", (_Handler,), {"gateway": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(
        self,
        method: str,
        path_prefix: str,
        status: int,
        times: int = 1,
        forward: bool = False,
        **headers: str,
    ) -> None:
        """Answer the next `times` matching requests with `status`; `forward`: after passing them on."""
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        with self._lock:
            self.rules.extend(Rule(method, path_prefix, status, hdrs, forward=forward) for _ in range(times))

    def requests(self, method: str, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.startswith(path_prefix)]

    def _take_rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and path.startswith(rule.path_prefix):
                    self.rules.remove(rule)
                    return rule
        return None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._http.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    gateway: Gateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = dict(self.headers.items())
        rule = self.gateway._take_rule(self.command, self.path)
        self.gateway.seen.append(Seen(self.command, self.path, headers, "gateway" if rule else "upstream"))
        if rule is None or rule.forward:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            response = self.gateway._http.request(
                self.command, self.gateway.upstream + self.path, headers=forwarded, content=body
            )
        if rule is not None:
            self._reply(rule.status, {"Content-Type": "application/json", **rule.headers}, rule.body)
            return
        out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
        self._reply(response.status_code, out, response.content)

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _handle
