"""A real webhook receiver on a loopback socket: records every request, answers from a script."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hit:
    """One request as received: headers with lower-case names, the raw body bytes."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An HTTP server that answers POSTs with `answers` in order, then 200 to all.

    `host="0.0.0.0"` listens on every interface (the guard test needs a target that would be
    reachable if the guard let the request through); `port=0` picks a free one. With `hold`,
    every request is recorded on arrival and answered only once `hold` is set (a hanging
    receiver); `open` and `most_open` count requests arrived and not yet answered.
    """

    def __init__(
        self,
        answers: list[int | Answer] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hold: threading.Event | None = None,
    ) -> None:
        self.answers = [a if isinstance(a, Answer) else Answer(a) for a in answers or []]
        self.hits: list[Hit] = []
        self.open = 0
        self.most_open = 0
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = receiver._arrive(self.path, headers, body)
                if hold is not None:
                    hold.wait()
                with receiver._changed:
                    receiver.open -= 1
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # many deliverers connect at once

        self.httpd = Server((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _arrive(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Record a request on arrival, before it is answered, and pick its answer."""
        with self._changed:
            answer = self.answers.pop(0) if self.answers else Answer(200)
            self.hits.append(Hit(path, headers, body, answer.status))
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            self._changed.notify_all()
            return answer

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Hit]:
        """Block until at least `count` requests arrived; returns all of them so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.hits) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.hits)} webhook requests arrived, expected {count}")
                self._changed.wait(left)
            return list(self.hits)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def private_name() -> str | None:
    """This machine's host name if it resolves only to non-public addresses (usually loopback):
    a target that passes the submit-time literal check and must be refused at delivery."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return name if addresses and not any(ip.is_global for ip in addresses) else None
