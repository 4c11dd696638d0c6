"""A real, misbehaving HTTP server on 127.0.0.1 for the fetch guard's tests.

Routes: /image.png, /status/<code>, /redirect?to=<url>, /loop, /big?n=<bytes> (with a
Content-Length), /endless (no length, streams until the client hangs up), /hang (never
answers), /drip (headers, then one byte every 50 ms). Every request is logged, so a test can
prove that a refused URL was never requested.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.utils.images import encode, photo

IMAGE_PNG = encode(photo("astronaut")[:64, :96])


@dataclass
class Request:
    path: str
    host: str


@dataclass
class TrickyServer:
    port: int
    stop: threading.Event
    log: list[Request] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: TrickyServer  # set on the subclass built per server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server_state
        state.log.append(Request(self.path, self.headers.get("Host", "")))
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        route = parts.path
        if route == "/image.png":
            self._send(200, IMAGE_PNG, {"Content-Type": "image/png"})
        elif route.startswith("/status/"):
            self._send(int(route.rsplit("/", 1)[1]), b"nope")
        elif route == "/redirect":
            self._send(302, headers={"Location": query["to"][0]})
        elif route == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif route == "/big":
            self._send(200, b"\0" * int(query["n"][0]), {"Content-Type": "image/png"})
        elif route == "/endless":
            self._stream(chunk=b"\0" * 65536, pause=0.0)
        elif route == "/drip":
            self._stream(chunk=b"\0", pause=0.05)
        elif route == "/hang":
            state.stop.wait(30)
        else:
            self._send(404)

    def _stream(self, chunk: bytes, pause: float) -> None:
        """No Content-Length (HTTP/1.0, close-delimited): only the client can end it."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        deadline = time.monotonic() + 30
        try:
            while not self.server_state.stop.is_set() and time.monotonic() < deadline:
                self.wfile.write(chunk)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the client hung up: what the byte limit and deadline must do


@pytest.fixture
def tricky() -> Iterator[TrickyServer]:
    stop = threading.Event()
    handler = type("Handler", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state = TrickyServer(port=httpd.server_address[1], stop=stop)
    handler.server_state = state
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@dataclass
class TlsServer:
    port: int
    sni: list[str | None]


@pytest.fixture
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """HTTPS on 127.0.0.1 with a self-signed certificate for `localhost`; records the SNI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    state = TlsServer(port=0, sni=[])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: state.sni.append(name)  # type: ignore[assignment]
    handler = type("Handler", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    handler.server_state = TrickyServer(port=state.port, stop=threading.Event())
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)
