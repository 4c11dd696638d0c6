"""One tenant's heavy or broken traffic against another's: figures as ratios in the same run.

1. Webhooks: tenant B's delay (outbox row committed -> request at B's receiver) alone, and while
   tenant A has 100 deliveries hanging (a) at 100 receivers that never answer, (b) at one such
   receiver; for contrast (c) the old shape, four attempts in flight (as four delivery loops
   were), with A's 12 deliveries at one receiver as in the issue. In-process deliverer on a
   SQLite file, real receivers on loopback, the default 10 s attempt timeout and limits (128 in
   flight, 8 per host). Target: B's delay under 1 s.
2. `/healthz` p99 while four clients each submit 30 MB data URIs back to back (100 jobs in
   all), against `/healthz` p99 on the idle server before and after. `fillframe serve
   --no-worker` on SQLite (the API process alone: no engine competes for its CPU); clients are
   curl processes, so their own CPU is not this process's GIL. Target: under 50 ms.
3. `GET /v2/jobs?limit=100` over those 100 data-URI jobs, against the same list over 100 jobs
   with URL inputs (another account, same server), alternating. Target: under 100 ms.

The 30 MB images are a PNG signature and random bytes: what the API stores and lists is the
same as for a real PNG, and the server runs no worker to decode them.

Usage: .venv/bin/python -m bench.isolation [--jobs 100] [--uri-mb 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fillframe.accounts import Caller, authenticate, create_key
from fillframe.db import Database
from fillframe.migrations import upgrade
from fillframe.settings import Settings
from fillframe.webhooks import deliver
from tests.utils.servers import LiveServer, fillframe_env
from tests.utils.servers import create_key as cli_create_key
from tests.webhooks.helpers import edit_request
from tests.webhooks.receiver import Receiver

HANGING = 100
B_SAMPLES = 5


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- 1. webhooks --------------------------------------------------------------------------------


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
    url: str, tmp: Path, targets: list[Receiver] | None, hanging: int, samples: int, **limits: int
) -> list[float]:
    """B's delays with A's `hanging` deliveries at `targets` (round robin), or alone (None)."""
    db = Database(url)
    settings = Settings(data_dir=tmp, database_url=url, allow_private_urls=True, **limits)
    a = await authenticate(db, (await create_key(db, "tenant-a"))[0])
    b = await authenticate(db, (await create_key(db, "tenant-b"))[0])
    deliverer = deliver.Deliverer(db, settings.webhooks)
    stop = asyncio.Event()
    running = asyncio.create_task(deliverer.run(stop))
    with Receiver() as healthy:
        await b_delays(db, deliverer, b, healthy, 1)  # warm-up (connections, threads): not counted
        if targets:
            for i in range(hanging):
                await queue_webhook(db, a, targets[i % len(targets)].url(f"/a{i}"))
            deliverer.wake()
            # Until A holds every slot it can: its host's cap at each receiver (they never answer).
            each = min(
                settings.webhooks.webhook_per_host,
                settings.webhooks.webhook_concurrency,
                hanging // len(targets),
            )
            for rx in targets:
                await asyncio.to_thread(rx.wait_for, each)
        delays = await b_delays(db, deliverer, b, healthy, samples)
    stop.set()
    await running  # the hanging attempts end by their timeout
    await db.close()
    return delays


def webhooks(tmp: Path) -> None:
    print("1. Tenant B's webhook delay (median of 5; target under 1 s, and as a ratio to alone):")
    release = threading.Event()  # never set: these receivers hang until the attempt times out
    many = [Receiver(hold=release) for _ in range(HANGING)]
    one = [Receiver(hold=release)]
    another = [Receiver(hold=release)]
    old = {"webhook_concurrency": 4, "webhook_per_host": 4}  # four loops, no cap of their own
    cases = [
        ("alone", None, 0, B_SAMPLES, {}),
        (f"A: {HANGING} deliveries at {HANGING} hanging receivers", many, HANGING, B_SAMPLES, {}),
        (f"A: {HANGING} deliveries at 1 hanging receiver", one, HANGING, B_SAMPLES, {}),
        ("old shape (4 in flight), A: 12 at 1 receiver, 1 sample", another, 12, 1, old),
    ]
    alone = None
    try:
        for i, (name, targets, hanging, samples, limits) in enumerate(cases):
            url = f"sqlite:///{tmp}/webhooks-{i}.db"
            upgrade(url)
            delays = asyncio.run(webhook_scenario(url, tmp, targets, hanging, samples, **limits))
            median = statistics.median(delays)
            alone = alone or median
            print(
                f"   {name:55} median {median * 1000:8.1f} ms  max {max(delays) * 1000:8.1f} ms"
                f"  ratio {median / alone:6.2f}",
                flush=True,
            )
    finally:
        release.set()
        for rx in many + one + another:
            rx.close()


# --- 2 and 3. data URIs at the API ------------------------------------------------------------


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
            f"2. /healthz during 4 clients x {jobs // 4} submits of {uri_mb:g} MB data URIs"
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
        print("3. GET /v2/jobs?limit=100 (20 each, alternating; target under 100 ms):")
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
    parser.add_argument("--jobs", type=int, default=100, help="data-URI jobs submitted (4 clients)")
    parser.add_argument("--uri-mb", type=float, default=30.0, help="size of each data URI")
    parser.add_argument("--skip-webhooks", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_webhooks:
            webhooks(Path(tmp))
        api(Path(tmp), args.jobs, args.uri_mb)


if __name__ == "__main__":
    main()
