"""Claim fairness: tenant B's time to COMPLETED while tenant A has a backlog, as a ratio to B's
time alone, on SQLite and PostgreSQL.

One `fillframe serve --no-worker` and one `fillframe worker` (worker_concurrency 1) with an
engine that takes `--engine-seconds` per job. A's backlog: `--slow` jobs whose image host
answers after `--slow-seconds`, then `--fast` jobs from a prompt host (the shape of the report in
issue 13: 6 jobs at 12 s, then 40 at 0.3 s, scaled down). B submits one job once A's first job
runs. Baseline, in the same run on the same processes: B's job alone, before A queues anything
(median of three).

Printed per backend: B alone, B behind the backlog, their ratio, the target (2x B alone plus
one engine run), and how many of A's jobs started after B's submit and before B's job (the
claim's share of B's wait: a fair claim starts none, a FIFO claim all of them). What is left of
B's wait is the job in flight when B arrived, slow image host included.

Usage: .venv/bin/python -m bench.fairness [--backends sqlite,postgresql] [--slow 6] [--fast 40]
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from tests.utils.backends import query
from tests.utils.images import encode
from tests.utils.jobs import edit_body, wait_job
from tests.utils.servers import LiveServer, WorkerProcess, create_key, drop_backend, fillframe_env

IMAGE = encode(np.full((64, 64, 3), 90, np.uint8), "PNG")
MASK = encode(np.pad(np.full((32, 32), 255, np.uint8), 16), "PNG")


class ImageHost:
    """Serves the image and mask at /fast/... at once and at /slow/... after a delay."""

    def __init__(self, slow_seconds: float) -> None:
        files = {"image.png": IMAGE, "mask.png": MASK}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                speed, _, name = self.path.strip("/").partition("/")
                if speed == "slow":
                    time.sleep(slow_seconds)
                body = files[name.split("?")[0]]
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def body(self, speed: str, n: int) -> dict:
        # A query string per job keeps any cache out of it.
        return edit_body(f"{self.base}/{speed}/image.png?{n}", f"{self.base}/{speed}/mask.png?{n}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/v2/images/edit", json=body)
    response.raise_for_status()
    return response.json()["jobId"]


def time_to_completed(client: httpx.Client, body: dict) -> tuple[str, float]:
    start = time.monotonic()
    job_id = submit(client, body)
    job = wait_job(client, job_id, timeout=600)
    assert job["status"] == "COMPLETED", job
    return job_id, time.monotonic() - start


def as_time(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value.replace(tzinfo=None)


def run(backend: str, args: argparse.Namespace) -> None:
    host = ImageHost(args.slow_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        env = fillframe_env(
            Path(tmp),
            backend,
            engine="tests.utils.engines:SleepEngine",
            test_sleep=str(args.engine_seconds),
            poll_seconds="0.2",
            rate_limit_per_minute="0",
        )
        api = LiveServer(env, "--no-worker")
        worker = WorkerProcess(env, Path(tmp) / "worker.log")
        try:
            key_a, key_b = create_key(env, "tenant-a"), create_key(env, "tenant-b")
            # The whole backlog may run at once as far as A's limit goes: only the claim decides.
            query(env, "UPDATE accounts SET max_concurrent_jobs = 1000")
            a = httpx.Client(base_url=api.url, headers={"X-API-Key": key_a}, timeout=30)
            b = httpx.Client(base_url=api.url, headers={"X-API-Key": key_b}, timeout=30)
            time_to_completed(b, host.body("fast", -1))  # warm-up: imports, first connections
            alone = statistics.median(time_to_completed(b, host.body("fast", -2 - i))[1] for i in range(3))
            backlog = [submit(a, host.body("slow", i)) for i in range(args.slow)]
            backlog += [submit(a, host.body("fast", i)) for i in range(args.fast)]
            wait_job(a, backlog[0], timeout=60, until={"PROCESSING", "COMPLETED"})
            job_b, behind = time_to_completed(b, host.body("fast", 10_000))
            (created_b, started_b), *_ = query(
                env, "SELECT created_at, started_at FROM jobs WHERE id = :j", j=job_b
            )
            started = dict(query(env, "SELECT id, started_at FROM jobs WHERE started_at IS NOT NULL"))
            between = sum(
                1
                for job in backlog
                if job in started and as_time(created_b) < as_time(started[job]) < as_time(started_b)
            )
            target = 2 * alone + args.engine_seconds
            print(
                f"{backend:11} {alone:9.2f} s {behind:11.2f} s {behind / alone:6.1f}x {target:9.2f} s"
                f" {'yes' if behind <= target else 'no':>4} {between:8d} of {len(backlog)}",
                flush=True,
            )
            a.close()
            b.close()
        finally:
            worker.stop()
            api.stop()
            drop_backend(env)
            host.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--slow", type=int, default=6)
    parser.add_argument("--fast", type=int, default=40)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--engine-seconds", type=float, default=0.3)
    args = parser.parse_args()
    print(
        f"A's backlog: {args.slow} jobs from an image host answering after {args.slow_seconds:g} s, then "
        f"{args.fast} from a prompt one; engine {args.engine_seconds:g} s a job, one worker"
    )
    print(
        f"{'backend':11} {'B alone':>11} {'B behind A':>13} {'ratio':>7} {'target':>11} {'met':>4}"
        f" {'A jobs started before B':>23}"
    )
    for backend in args.backends.split(","):
        run(backend, args)


if __name__ == "__main__":
    main()
