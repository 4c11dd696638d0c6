"""Sustained submit rate, and an 8192x8192 upload flood, against a live `fillframe serve`
(default classic engine, its in-process worker running, SQLite unless --backend postgresql).

The server, the image host (`python -m http.server`) and this load generator are three processes.
Ratios are against baselines measured in the same run.

1. Sustained submit rate. Open loop: request i is sent at start + i/rate whatever the answers do,
   and its latency counts from that scheduled time, so a server that falls behind shows it. Steps
   double the rate from --start-rate (--step-seconds each) while a step holds (every answer 202,
   p99 <= --p99-ms), bisect between the last rate that held and the first that did not, then hold
   the best for --seconds (60); an answer still missing 10 s after a step's window counts as an
   error, as does a request due while 1024 are unanswered, so an overloaded step ends instead of
   draining a backlog for minutes. Prints p50/p99 at that rate against the unloaded p50/p99
   (one request at a time) and the server's RSS before and after (target: after/before <= 1.10).
   The key's rate limit is lifted (`fillframe keys limits ID --rate 0`); every job is a real
   inpaint of a 128x128 photo, so the worker runs beside the API the whole time.
2. Upload flood. --flood-clients connections post an 8192x8192 PNG of a real photo (scikit-image,
   upscaled) as a multipart upload and, as a data-URI submit, for --flood-seconds. Each answer must
   be a refusal (413/400). The client streams each body in 1 MB chunks and stops when the answer
   comes, so "MB sent" shows how much the server took in before refusing; like curl, it sends
   `Expect: 100-continue` and waits for `100 Continue` before any body byte. Prints refusal latency
   against the unloaded submit p50 and the server's RSS peak and after against before.

With --separate-worker the API runs as `serve --no-worker` and the jobs run in a `fillframe worker`
process (RSS is still the API server's).

Usage: .venv/bin/python -m bench.load [--seconds 60] [--backend sqlite] [--separate-worker]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.images import box_mask, encode, photo
from tests.utils.servers import (
    LiveServer,
    WorkerProcess,
    cli,
    create_key,
    drop_backend,
    fillframe_env,
    free_port,
    wait_until_up,
)

CHUNK = 1024 * 1024
MB = 1024 * 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def rss(pid: int) -> int:
    """Resident bytes of the server process and any children it has."""
    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


class RssWatch:
    """Samples a process's RSS every 50 ms in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


LATE_SECONDS = 10.0  # after a step's window, how long its outstanding requests may still take
MAX_WAITING = 1024  # requests in flight beyond which the generator counts new ones as errors


@dataclass
class Step:
    """One fixed-rate window: latencies (s, from the scheduled send time) and what came back."""

    rate: float
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    lag: list[float] = field(default_factory=list)  # how late the generator sent (its own limit)

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "202")

    def holds(self, p99_ms: float) -> bool:
        return self.errors == 0 and percentile(self.latencies, 0.99) * 1000 <= p99_ms

    def line(self, p99_ms: float) -> str:
        return (
            f"  {self.rate:7.1f} req/s x {self.seconds:4.0f} s  sent {self.statuses.total():6d}  "
            f"errors {self.errors:4d}  p50 {percentile(self.latencies, 0.5) * 1000:7.1f} ms  "
            f"p99 {percentile(self.latencies, 0.99) * 1000:7.1f} ms  "
            f"generator lag p99 {percentile(self.lag, 0.99) * 1000:6.1f} ms  "
            f"{'held' if self.holds(p99_ms) else 'NOT held'}"
            + (f"  answers {dict(self.statuses)}" if self.errors else "")
        )


async def open_loop(url: str, headers: dict[str, str], body: dict, rate: float, seconds: float) -> Step:
    """Send `rate` submits per second for `seconds`, on schedule, each as its own task."""
    step = Step(rate, seconds)
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:

        async def one(due: float) -> None:
            try:
                response = await client.post("/v2/images/edit", json=body)
                status = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            step.latencies.append(time.perf_counter() - due)
            step.statuses[status] += 1

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for i in range(max(1, int(rate * seconds))):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            step.lag.append(max(0.0, time.perf_counter() - due))
            if len(tasks) - len(step.latencies) >= MAX_WAITING:
                # The server is this far behind: a request queued behind the rest would only
                # slow this generator down (httpx's pool is quadratic in waiting requests).
                step.statuses["not sent: server behind"] += 1
                continue
            tasks.append(asyncio.create_task(one(due)))
        # An overloaded server can take minutes to answer a backlog; answers later than this
        # count as errors, so a step that cannot hold ends soon after its window.
        _, late = await asyncio.wait(tasks, timeout=LATE_SECONDS)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            step.statuses["unanswered"] += len(late)
    return step


async def one_at_a_time(url: str, headers: dict[str, str], body: dict, n: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = await client.post("/v2/images/edit", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 202:
                raise RuntimeError(f"baseline submit answered {response.status_code}: {response.text}")
    return latencies


def find_sustained(url: str, headers: dict[str, str], body: dict, args: argparse.Namespace) -> float:
    """Double while a step holds, then bisect; returns the best rate that held (0 if none)."""
    step_seconds = min(args.step_seconds, args.seconds)
    good, bad, rate = 0.0, None, args.start_rate
    print(f"Search ({step_seconds:.0f} s steps; held = 0 errors and p99 <= {args.p99_ms:.0f} ms):")
    while bad is None and rate <= args.max_rate:
        step = asyncio.run(open_loop(url, headers, body, rate, step_seconds))
        print(step.line(args.p99_ms), flush=True)
        if step.holds(args.p99_ms):
            good, rate = rate, rate * 2
        else:
            bad = rate
        time.sleep(1)
    for _ in range(args.bisect if bad is not None else 0):
        rate = (good + bad) / 2
        step = asyncio.run(open_loop(url, headers, body, rate, step_seconds))
        print(step.line(args.p99_ms), flush=True)
        if step.holds(args.p99_ms):
            good = rate
        else:
            bad = rate
        time.sleep(1)
    return good


def multipart(data: bytes, boundary: str = "fillframe-load-boundary") -> tuple[bytes, str]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Refusal:
    status: str  # the HTTP status, or what happened instead
    seconds: float  # from the first byte sent to the answer
    sent: int  # body bytes written before the answer came


async def read_head(reader: asyncio.StreamReader) -> str:
    """The status code of the next response head on the connection."""
    return (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1].decode()


async def post_streaming(port: int, path: str, key: str, content_type: str, body: bytes) -> Refusal:
    """POST `body` the way curl sends a large one: `Expect: 100-continue`, then the body in 1 MB
    chunks only after `100 Continue`, stopping as soon as the final answer arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    sent = 0
    try:
        writer.write(head)
        status = await asyncio.wait_for(read_head(reader), 120)
        if status == "100":
            answer = asyncio.create_task(read_head(reader))
            with contextlib.suppress(ConnectionError):
                for offset in range(0, len(body), CHUNK):
                    if answer.done():
                        break
                    writer.write(body[offset : offset + CHUNK])
                    await writer.drain()
                    sent += min(CHUNK, len(body) - offset)
            status = await asyncio.wait_for(answer, 120)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
        status = type(exc).__name__
    elapsed = time.perf_counter() - start
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return Refusal(status, elapsed, sent)


async def flood(
    port: int, key: str, kinds: dict[str, tuple[str, str, bytes]], clients: int, seconds: float
) -> dict[str, list[Refusal]]:
    """`clients` connections in a closed loop, alternating between the kinds, for `seconds`."""
    results: dict[str, list[Refusal]] = {name: [] for name in kinds}
    deadline = time.monotonic() + seconds
    names = list(kinds)

    async def client(i: int) -> None:
        n = i
        while time.monotonic() < deadline:
            name = names[n % len(names)]
            path, content_type, body = kinds[name]
            results[name].append(await post_streaming(port, path, key, content_type, body))
            n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return results


@contextlib.contextmanager
def image_host(folder: Path) -> Iterator[str]:
    """`python -m http.server` on `folder`, in its own process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/photo.jpg", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def wait_jobs(url: str, headers: dict[str, str], ids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for job_id in ids:
            while (job := client.get(f"/v2/jobs/{job_id}").json())["status"] not in (
                "COMPLETED",
                "FAILED",
                "CANCELLED",
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"warm-up job {job_id} still {job['status']}")
                time.sleep(0.1)
            if job["status"] != "COMPLETED":
                raise RuntimeError(f"warm-up job {job_id} ended {job['status']}: {job['error']}")


def data_uri_of(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def mb(n: float) -> str:
    return f"{n / MB:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="Hold the best rate this long.")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--start-rate", type=float, default=25.0)
    parser.add_argument("--max-rate", type=float, default=5000.0)
    parser.add_argument("--bisect", type=int, default=3, help="Bisection steps after the doubling.")
    parser.add_argument("--p99-ms", type=float, default=250.0, help="A step holds when p99 is under this.")
    parser.add_argument("--flood-seconds", type=float, default=None, help="Default: --seconds / 3.")
    parser.add_argument("--flood-clients", type=int, default=4)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="`serve --no-worker` plus a `fillframe worker` process, instead of the in-process worker.",
    )
    args = parser.parse_args()
    flood_seconds = args.flood_seconds if args.flood_seconds is not None else max(5.0, args.seconds / 3)

    with tempfile.TemporaryDirectory(prefix="fillframe-load-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        (images / "photo.jpg").write_bytes(encode(photo("coffee", (128, 128)), "JPEG", quality=90))
        (images / "mask.png").write_bytes(encode(box_mask(128, 128), "PNG"))
        env = fillframe_env(Path(tmp) / "data", args.backend)
        server = worker = None
        try:
            with image_host(images) as host:
                if args.separate_worker:
                    server = LiveServer(env, "--no-worker")
                    worker = WorkerProcess(env, Path(tmp) / "worker.log")
                else:
                    server = LiveServer(env)
                key = create_key(env, "load")
                key_id = cli(env, "keys", "list").stdout.splitlines()[-1].split()[0]
                cli(env, "keys", "limits", key_id, "--rate", "0")
                headers = {"X-API-Key": key}
                body = {
                    "prompt": "a ceramic cup on a wooden table",
                    "model": "flux-fill-pro",
                    "fluxFillParams": {"image": f"{host}/photo.jpg", "mask": f"{host}/mask.png"},
                }
                base_p50 = submit_load(server, headers, body, args)
                if base_p50 is not None:
                    upload_flood(server, key, body, base_p50, args.flood_clients, flood_seconds)
        finally:
            if server is not None:
                server.stop()
            if worker is not None:
                worker.stop()
            drop_backend(env)


def submit_load(
    server: LiveServer, headers: dict[str, str], body: dict, args: argparse.Namespace
) -> float | None:
    """Part 1; returns the unloaded submit p50 (s), the flood's baseline, or None if no rate held."""
    pid = server.proc.pid
    # Warm up: real jobs through the worker (the classic engine compiles on first use), then the
    # submit path; only then is the server's memory its steady "before".
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        ids = [client.post("/v2/images/edit", json=body).json()["jobId"] for _ in range(4)]
    wait_jobs(server.url, headers, ids)
    asyncio.run(one_at_a_time(server.url, headers, body, 50))
    unloaded = asyncio.run(one_at_a_time(server.url, headers, body, 200))
    base_p50, base_p99 = percentile(unloaded, 0.5), percentile(unloaded, 0.99)
    print(
        f"Unloaded submit (one at a time, {len(unloaded)} requests): "
        f"p50 {base_p50 * 1000:.1f} ms, p99 {base_p99 * 1000:.1f} ms",
        flush=True,
    )

    best = find_sustained(server.url, headers, body, args)
    if best == 0:
        print(f"No rate held, not even {args.start_rate} req/s.")
        return None
    # The search's steps are short: if the full hold misses, step down 15% (at most 3 times).
    rss_before = rss(pid)
    with RssWatch(pid) as watch:
        for attempt in range(4):
            held = asyncio.run(open_loop(server.url, headers, body, best, args.seconds))
            print(f"Hold at {best:.1f} req/s for {args.seconds:.0f} s:")
            print(held.line(args.p99_ms), flush=True)
            if held.holds(args.p99_ms) or attempt == 3:
                break
            best *= 0.85
            time.sleep(1)
    time.sleep(1)
    rss_after = rss(pid)
    p50, p99 = percentile(held.latencies, 0.5), percentile(held.latencies, 0.99)
    print(
        f"Sustained: {best:.1f} submits/s for {args.seconds:.0f} s with {held.errors} errors "
        f"({'held' if held.holds(args.p99_ms) else 'NOT held'}); "
        f"p50 {p50 * 1000:.1f} ms = {p50 / base_p50:.2f}x unloaded, "
        f"p99 {p99 * 1000:.1f} ms = {p99 / base_p99:.2f}x unloaded",
    )
    print(
        f"Server RSS: before {mb(rss_before)}, peak {mb(watch.peak)}, after {mb(rss_after)}: "
        f"after/before {rss_after / rss_before:.3f} (target <= 1.10)",
        flush=True,
    )
    return base_p50


def upload_flood(
    server: LiveServer, key: str, body: dict, base_p50: float, clients: int, seconds: float
) -> None:
    """Part 2: oversized uploads and data-URI submits must be refused without the RSS climbing."""
    pid = server.proc.pid
    rgb = photo("astronaut", (8192, 8192))
    png = encode(rgb, "PNG", compress_level=1)
    del rgb
    upload, upload_type = multipart(png)
    submit = httpx.Request("POST", "/", json={**body, "fluxFillParams": {"image": data_uri_of(png)}}).content
    kinds = {
        "upload": ("/v2/uploads", upload_type, upload),
        "data-URI submit": ("/v2/images/edit", "application/json", submit),
    }
    print(
        f"Flood: {clients} connections for {seconds:.0f} s, an 8192x8192 PNG "
        f"({mb(len(png))}): multipart upload {mb(len(upload))}, data-URI submit {mb(len(submit))}",
        flush=True,
    )
    del png
    rss_before = rss(pid)
    with RssWatch(pid) as watch:
        results = asyncio.run(flood(server.port, key, kinds, clients, seconds))
    time.sleep(1)
    rss_after = rss(pid)
    for name, refusals in results.items():
        statuses = Counter(r.status for r in refusals)
        latencies = [r.seconds for r in refusals]
        sent = statistics.median(r.sent for r in refusals)
        size = len(kinds[name][2])
        refused = all(r.status in ("413", "400") for r in refusals)
        print(
            f"  {name:16} {len(refusals):4d} sent  answers {dict(statuses)}  "
            f"{'all refused' if refused else 'NOT all refused'}  "
            f"refusal p50 {percentile(latencies, 0.5) * 1000:7.1f} ms "
            f"({percentile(latencies, 0.5) / base_p50:6.1f}x unloaded submit p50)  "
            f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms  "
            f"body sent before the answer: median {mb(sent)} of {mb(size)} ({sent / size:.0%})"
        )
    print(
        f"Server RSS during the flood: before {mb(rss_before)}, peak {mb(watch.peak)} "
        f"({watch.peak / rss_before:.2f}x), after {mb(rss_after)} ({rss_after / rss_before:.3f}x; "
        "target <= 1.10)"
    )


if __name__ == "__main__":
    main()
