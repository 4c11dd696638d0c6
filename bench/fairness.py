"""Fairness between tenants: one tenant's backlog or broken traffic against another's, each
figure as a ratio to a baseline measured in the same run. Four parts (`--parts`, default all):

claims: tenant B's time to COMPLETED while tenant A has a backlog, as a ratio to B's time alone,
   on SQLite and PostgreSQL. One `fillframe serve --no-worker` and one `fillframe worker`
   (worker_concurrency 1) with an engine that takes `--engine-seconds` per job. A's backlog:
   `--slow` jobs whose image host answers after `--slow-seconds`, then `--fast` jobs from a
   prompt host (the shape of the report in issue 13: 6 jobs at 12 s, then 40 at 0.3 s, scaled
   down). B submits one job once A's first job runs. Baseline, in the same run on the same
   processes: B's job alone, before A queues anything (median of three). Printed per backend:
   B alone, B behind the backlog, their ratio, the target (2x B alone plus one engine run), and
   how many of A's jobs started after B's submit and before B's job (the claim's share of B's
   wait: a fair claim starts none, a FIFO claim all of them). What is left of B's wait is the
   job in flight when B arrived, slow image host included.
webhooks: tenant B's delay (outbox row committed -> request at B's receiver) alone, and while
   tenant A has 100 deliveries hanging (a) at 100 receivers that never answer, (b) at one such
   receiver, (c) at one such receiver with two deliverers sharing the database (as two worker
   processes; the most in flight there at once shows the cap per host holds over both); for
   contrast (d) the old shape, four attempts in flight (as
   four delivery loops were), with A's 12 deliveries at one receiver as in the issue.
   In-process deliverers on a SQLite file, real receivers on loopback, the default 10 s attempt
   timeout and limits (128 in flight, 8 per host). Target: B's delay under 1 s.
healthz: `/healthz` p99 while four clients each submit 30 MB data URIs back to back (100 jobs
   in all), against `/healthz` p99 on the idle server before and after. `fillframe serve
   --no-worker` on SQLite (the API process alone: no engine competes for its CPU); clients are
   curl processes, so their own CPU is not this process's GIL. Target: under 50 ms.
list (after healthz, over its jobs): `GET /v2/jobs?limit=100` over those 100 data-URI jobs,
   against the same list over 100 jobs with URL inputs (another account, same server),
   alternating. Target: under 100 ms.

The 30 MB images are a PNG signature and random bytes: what the API stores and lists is the
same as for a real PNG, and the server runs no worker to decode them.

Usage: .venv/bin/python -m bench.fairness [--parts claims,webhooks,api] [--backends sqlite,postgresql]
       [--slow 6] [--fast 40] [--jobs 100] [--uri-mb 30]
("api" runs healthz and list.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fillframe.accounts import Caller, authenticate, create_key
from fillframe.db import Database
from fillframe.migrations import upgrade
from fillframe.settings import Settings
from fillframe.webhooks import deliver
from tests.utils.backends import query
from tests.utils.images import encode
from tests.utils.jobs import edit_body, wait_job
from tests.utils.servers import LiveServer, WorkerProcess, drop_backend, fillframe_env
from tests.utils.servers import create_key as cli_create_key
from tests.webhooks.helpers import edit_request
from tests.webhooks.receiver import Receiver

HANGING = 100
B_SAMPLES = 5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- claims ----------------------------------------------------------------------------------------


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


def claims(backend: str, args: argparse.Namespace) -> None:
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
            key_a, key_b = cli_create_key(env, "tenant-a"), cli_create_key(env, "tenant-b")
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


# --- webhooks --------------------------------------------------------------------------------


async def queue_webhook(db: Database, caller: Caller, url: str) -> float:
    """Queue a delivery to `url` for a new job of `caller`; returns when it was committed."""
    from fillframe.jobs import service

    job_id = (await service.submit(db, caller, edit_request(url), cost=0, max_attempts=3)).job_id
    async with db.write() as conn:
        await deliver.enqueue(conn, job_id, "failed", url, {"event": "failed", "jobId": job_id})
    return time.perf_counter()


async def b_delays(
    db: Database, deliverer: deliver.Deliverer, caller: Caller, rx: Receiver, samples: int
) -> list[float]:
    delays = []
    for _ in range(samples):
        seen = len(rx.hits)
        committed = await queue_webhook(db, caller, rx.url())
        deliverer.wake()  # as the worker that ended the job does
        await asyncio.to_thread(rx.wait_for, seen + 1, 300)
        delays.append(time.perf_counter() - committed)
    return delays


async def webhook_scenario(
    url: str,
    tmp: Path,
    targets: list[Receiver] | None,
    hanging: int,
    samples: int,
    deliverers: int = 1,
    **limits: int,
) -> list[float]:
    """B's delays with A's `hanging` deliveries at `targets` (round robin), or alone (None);
    `deliverers` of them, each on its own connections (as so many worker processes)."""
    dbs = [Database(url) for _ in range(deliverers)]
    db = dbs[0]
    settings = Settings(data_dir=tmp, database_url=url, allow_private_urls=True, **limits)
    a = await authenticate(db, (await create_key(db, "tenant-a"))[0])
    b = await authenticate(db, (await create_key(db, "tenant-b"))[0])
    running = [deliver.Deliverer(each, settings) for each in dbs]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(one.run(stop)) for one in running]
    with Receiver() as healthy:
        await b_delays(db, running[0], b, healthy, 1)  # warm-up (connections, threads): not counted
        if targets:
            for i in range(hanging):
                await queue_webhook(db, a, targets[i % len(targets)].url(f"/a{i}"))
            for one in running:
                one.wake()
            # Until A holds every slot it can: its host's cap at each receiver (they never answer).
            each = min(settings.webhook_per_host, settings.webhook_concurrency, hanging // len(targets))
            for rx in targets:
                await asyncio.to_thread(rx.wait_for, each)
        delays = await b_delays(db, running[0], b, healthy, samples)
    stop.set()
    await asyncio.gather(*tasks)  # the hanging attempts end by their timeout
    for each in dbs:
        await each.close()
    return delays


def webhooks(tmp: Path) -> None:
    print("Webhooks: tenant B's delay (median of 5; target under 1 s, and as a ratio to alone):")
    release = threading.Event()  # never set: these receivers hang until the attempt times out
    many = [Receiver(hold=release) for _ in range(HANGING)]
    one = [Receiver(hold=release)]
    shared = [Receiver(hold=release)]
    another = [Receiver(hold=release)]
    old = {"webhook_concurrency": 4, "webhook_per_host": 4}  # four loops, no cap of their own
    cases = [
        ("alone", None, 0, B_SAMPLES, 1, {}),
        (f"A: {HANGING} deliveries at {HANGING} hanging receivers", many, HANGING, B_SAMPLES, 1, {}),
        (f"A: {HANGING} deliveries at 1 hanging receiver", one, HANGING, B_SAMPLES, 1, {}),
        (f"A: {HANGING} at 1 hanging receiver, 2 deliverers", shared, HANGING, B_SAMPLES, 2, {}),
        ("old shape (4 in flight), A: 12 at 1 receiver, 1 sample", another, 12, 1, 1, old),
    ]
    alone = None
    try:
        for i, (name, targets, hanging, samples, deliverers, limits) in enumerate(cases):
            url = f"sqlite:///{tmp}/webhooks-{i}.db"
            upgrade(url)
            delays = asyncio.run(webhook_scenario(url, tmp, targets, hanging, samples, deliverers, **limits))
            median = statistics.median(delays)
            alone = alone or median
            print(
                f"   {name:55} median {median * 1000:8.1f} ms  max {max(delays) * 1000:8.1f} ms"
                f"  ratio {median / alone:6.2f}",
                flush=True,
            )
        print(
            f"   most in flight at once at the 1 receiver: 1 deliverer {one[0].most_open},"
            f" 2 deliverers {shared[0].most_open} (cap per host 8, over all deliverers)"
        )
    finally:
        release.set()
        for rx in many + one + shared + another:
            rx.close()


# --- healthz and list: data URIs at the API ------------------------------------------------------------


def healthz_latencies(url: str, stop: threading.Event | None = None, count: int = 300) -> list[float]:
    """Sequential /healthz round trips, one every 5 ms: `count` of them, or until `stop` is set."""
    times = []
    with httpx.Client(base_url=url) as client:
        client.get("/healthz")
        while len(times) < count if stop is None else not stop.is_set():
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            times.append(time.perf_counter() - start)
            time.sleep(0.005)
    return times


def data_uri_body(path: Path, uri_mb: float) -> None:
    raw_size = int(uri_mb * 1024 * 1024) * 3 // 4 - 8
    image = b"\x89PNG\r\n\x1a\n" + os.urandom(raw_size)
    uri = "data:image/png;base64," + base64.b64encode(image).decode()
    body = {
        "prompt": "more sky",
        "model": "flux-fill-pro",
        "fluxFillParams": {"image": uri, "mode": "outpaint"},
    }
    path.write_text(json.dumps(body))


def submit_with_curl(url: str, key: str, body: Path, count: int, codes: list[str]) -> None:
    for _ in range(count):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", f"{url}/v2/images/edit",
             "-H", f"X-API-Key: {key}", "-H", "Content-Type: application/json", "--data-binary", f"@{body}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        codes.append(out.stdout)


def list_times(url: str, key: str, rounds: int, expect: int) -> list[float]:
    times = []
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for _ in range(rounds):
            start = time.perf_counter()
            response = client.get("/v2/jobs", params={"limit": 100})
            times.append(time.perf_counter() - start)
            assert response.status_code == 200 and len(response.json()["jobs"]) == expect
    return times


def rss_mb(server: LiveServer) -> float:
    ps = subprocess.run(["ps", "-o", "rss=", "-p", str(server.proc.pid)], capture_output=True, text=True)
    return int(ps.stdout) / 1024


def api(tmp: Path, jobs: int, uri_mb: float) -> None:
    env = fillframe_env(tmp / "api", rate_limit_per_minute="0")
    server = LiveServer(env, "--no-worker")
    try:
        heavy, light = cli_create_key(env, "heavy"), cli_create_key(env, "light")
        body = tmp / "body.json"
        data_uri_body(body, uri_mb)
        idle = healthz_latencies(server.url)
        rss_before = rss_mb(server)
        stop = threading.Event()
        codes: list[str] = []
        submitters = [
            threading.Thread(target=submit_with_curl, args=(server.url, heavy, body, jobs // 4, codes))
            for _ in range(4)
        ]
        under_load: list[float] = []
        probe = threading.Thread(target=lambda: under_load.extend(healthz_latencies(server.url, stop)))
        start = time.perf_counter()
        probe.start()
        for t in submitters:
            t.start()
        for t in submitters:
            t.join()
        stop.set()
        probe.join()
        elapsed = time.perf_counter() - start
        idle += healthz_latencies(server.url)
        assert set(codes) == {"202"}, sorted(set(codes))
        print(
            f"/healthz during 4 clients x {jobs // 4} submits of {uri_mb:g} MB data URIs"
            f" ({elapsed:.1f} s, {len(codes) / elapsed:.1f} submits/s; target p99 under 50 ms):"
        )
        for name, times in (("idle (before and after)", idle), ("during the submits", under_load)):
            print(
                f"   {name:28} n {len(times):5}  p50 {pct(times, 0.5) * 1000:7.2f} ms"
                f"  p99 {pct(times, 0.99) * 1000:7.2f} ms  max {max(times) * 1000:7.2f} ms"
                f"  p99 ratio {pct(times, 0.99) / pct(idle, 0.99):5.2f}"
            )
        with httpx.Client(base_url=server.url, headers={"X-API-Key": light}) as client:
            for i in range(jobs):
                image = f"https://images.example.com/photo-{i}.jpg"
                params = {"image": image, "mode": "outpaint"}
                response = client.post(
                    "/v2/images/edit",
                    json={"prompt": "more sky", "model": "flux-fill-pro", "fluxFillParams": params},
                )
                assert response.status_code == 202, response.text
        with_uris, with_urls = [], []
        for _ in range(10):  # alternating, so drift on a shared machine falls on both
            with_uris += list_times(server.url, heavy, 2, min(jobs, 100))
            with_urls += list_times(server.url, light, 2, min(jobs, 100))
        print("GET /v2/jobs?limit=100 (20 each, alternating; target under 100 ms):")
        base = statistics.median(with_urls)
        for name, times in (
            (f"over {jobs} URL-input jobs", with_urls),
            (f"over {jobs} data-URI jobs", with_uris),
        ):
            print(
                f"   {name:28} p50 {statistics.median(times) * 1000:7.2f} ms"
                f"  max {max(times) * 1000:7.2f} ms  p50 ratio {statistics.median(times) / base:5.2f}"
            )
        print(f"   API process RSS: {rss_before:.0f} MB idle at start, {rss_mb(server):.0f} MB at the end")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts_help = "comma-separated: claims, webhooks, api (healthz and list)"
    parser.add_argument("--parts", default="claims,webhooks,api", help=parts_help)
    parser.add_argument("--backends", default="sqlite,postgresql", help="for the claims part")
    parser.add_argument("--slow", type=int, default=6)
    parser.add_argument("--fast", type=int, default=40)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--engine-seconds", type=float, default=0.3)
    parser.add_argument("--jobs", type=int, default=100, help="data-URI jobs submitted (4 clients)")
    parser.add_argument("--uri-mb", type=float, default=30.0, help="size of each data URI")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if unknown := parts - {"claims", "webhooks", "api"}:
        parser.error(f"unknown parts {sorted(unknown)}; choose from claims, webhooks, api")
    if "claims" in parts:
        print(
            f"Claims. A's backlog: {args.slow} jobs from an image host answering after"
            f" {args.slow_seconds:g} s, then {args.fast} from a prompt one; engine"
            f" {args.engine_seconds:g} s a job, one worker"
        )
        print(
            f"{'backend':11} {'B alone':>11} {'B behind A':>13} {'ratio':>7} {'target':>11} {'met':>4}"
            f" {'A jobs started before B':>23}"
        )
        for backend in args.backends.split(","):
            claims(backend, args)
    with tempfile.TemporaryDirectory() as tmp:
        if "webhooks" in parts:
            webhooks(Path(tmp))
        if "api" in parts:
            api(Path(tmp), args.jobs, args.uri_mb)


if __name__ == "__main__":
    main()
