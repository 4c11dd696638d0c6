"""Real processes and sockets: a static image server and a live `fillframe serve`."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.utils.backends import create_pg_database, drop_pg_database
from tests.utils.poll import until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class ImageServer:
    """Serves a folder over HTTP on 127.0.0.1, the way a user's own image host would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def add(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return self.url(name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def fillframe_env(data_dir: Path, backend: str = "sqlite", **settings: str) -> dict[str, str]:
    """Environment for a fillframe process; `backend="postgresql"` creates a fresh database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILLFRAME_") or k == "FILLFRAME_TEST_PG"}
    env["FILLFRAME_DATA_DIR"] = str(data_dir)
    if backend == "postgresql":
        env["FILLFRAME_DATABASE_URL"] = create_pg_database()
    env["FILLFRAME_ALLOW_PRIVATE_URLS"] = "true"
    env["PYTHONPATH"] = str(ROOT)  # test engines live in tests/utils
    for key, value in settings.items():
        env[f"FILLFRAME_{key.upper()}"] = value
    return env


def drop_backend(env: dict[str, str]) -> None:
    url = env.get("FILLFRAME_DATABASE_URL")
    if url:
        drop_pg_database(url)


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fillframe", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def create_key(env: dict[str, str], name: str = "tester", credits: int | None = None) -> str:
    args = ["keys", "create", "--name", name]
    if credits is not None:
        args += ["--credits", str(credits)]
    return cli(env, *args).stdout.strip().splitlines()[-1]


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> float:
    """Poll `url` until it answers 200; returns the seconds it took."""
    start = time.monotonic()

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=1.0).status_code == 200
        return False

    until(answers, f"{url} up", timeout, every=0.02)
    return time.monotonic() - start


class FillframeProcess:
    """A `python -m fillframe ...` subprocess with its output in a log file."""

    def __init__(self, env: dict[str, str], args: list[str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fillframe", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class LiveServer(FillframeProcess):
    """`fillframe serve` as a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], *extra: str, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_path = log_path or Path(env["FILLFRAME_DATA_DIR"]) / f"serve-{self.port}.log"
        super().__init__(env, ["serve", "--port", str(self.port), *extra], log_path)
        self.startup_seconds = wait_until_up(f"{self.url}/healthz", self.proc)


class WorkerProcess(FillframeProcess):
    """`fillframe worker` as a subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, ["worker"], log_path)


@contextlib.contextmanager
def own_server(data_dir: Path, backend: str, *extra: str, **settings: str) -> Iterator[LiveServer]:
    """A `fillframe serve` with a test's own settings and database; stopped and dropped after."""
    env = fillframe_env(data_dir, backend, **settings)
    server = None
    try:
        server = LiveServer(env, *extra)
        yield server
    finally:
        if server is not None:
            server.stop()
        drop_backend(env)
