"""Submit throughput and latency of `POST /v2/images/edit`, as ratios measured in the same run.

1. Fillframe (`fillframe serve --no-worker`, SQLite) against a bare FastAPI endpoint that parses
   the same request model and answers the same 202 (uvicorn, same settings), at concurrency 1 and
   16. Target: at least 0.5 of the bare endpoint's throughput.
2. The cost of the guarantees: submit with a metered account (credit hold), a fresh
   Idempotency-Key per request and the per-key rate limit on, against submit on an unlimited key
   with no idempotency key and the rate limit off. Target: under 1.3x the latency.

Each comparison alternates short rounds of its two sides (8 each) so that drift on a shared,
noisy machine falls on both alike. The body is the seed page's example.

Usage: .venv/bin/python -m bench.api [--seconds 8]   (seconds per side and concurrency)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fillframe.contract import EditRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.servers import LiveServer, cli, create_key, fillframe_env, free_port, wait_until_up

ROUNDS = 8  # alternating rounds per side and concurrency

SEED_BODY = {
    "prompt": "a sleek silver sports car on a coastal highway at sunset, hyper-realistic",
    "model": "flux-fill-pro",
    "fluxFillParams": {
        "image": "https://example.com/input.jpg",
        "mode": "inpaint",
        "mask": "https://example.com/input.jpg",
        "outpaint": "Zoom out 1.5x",
    },
}


def bare_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/v2/images/edit", status_code=202)
    async def edit(req: EditRequest) -> JSONResponse:
        return JSONResponse({"jobId": str(uuid.uuid4()), "status": "QUEUED"}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


@dataclass(frozen=True)
class Target:
    """One side of a comparison: where to send the seed body, with which headers."""

    url: str
    headers: dict[str, str]
    idempotency: bool = False


async def load(target: Target, concurrency: int, seconds: float) -> tuple[list[float], int, float]:
    """Submit from `concurrency` clients for `seconds`: (latencies, errors, elapsed)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(base_url=target.url, headers=target.headers, limits=limits, timeout=30)
    async with client:

        async def one_client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                extra = {"Idempotency-Key": uuid.uuid4().hex} if target.idempotency else {}
                start = time.perf_counter()
                response = await client.post("/v2/images/edit", json=SEED_BODY, headers=extra)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 202:
                    errors += 1

        start = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return latencies, errors, time.monotonic() - start


def summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    latencies = sorted(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "mean": statistics.fmean(latencies) * 1000,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "errors": errors,
    }


def compare(base: Target, ours: Target, concurrency: int, seconds: float) -> tuple[dict, dict]:
    """Alternate short rounds of the two (base, ours, base, ours, ...) so that drift on a shared,
    noisy machine (other load, a growing database) falls on both sides alike."""
    totals: dict[int, tuple[list[float], int, float]] = {0: ([], 0, 0.0), 1: ([], 0, 0.0)}
    for _ in range(ROUNDS):
        for side, target in enumerate((base, ours)):
            latencies, errors, elapsed = asyncio.run(load(target, concurrency, seconds / ROUNDS))
            all_latencies, all_errors, all_elapsed = totals[side]
            totals[side] = (all_latencies + latencies, all_errors + errors, all_elapsed + elapsed)
    return summary(*totals[0]), summary(*totals[1])


def row(name: str, concurrency: int, r: dict, base: dict | None = None) -> str:
    ratio = f"{r['rps'] / base['rps']:5.2f}" if base else "  1.00"
    return (
        f"{name:34} c={concurrency:<3} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms  errors {r['errors']}  throughput ratio {ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import uvicorn; "
         f"from bench.api import bare_app; uvicorn.run(bare_app(), host='127.0.0.1', port={port}, "
         "log_level='warning')"],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        env = fillframe_env(Path(tmp))
        server = LiveServer(env, "--no-worker")
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz", bare)
            plain_key = create_key(env, "plain")
            key_id = cli(env, "keys", "list").stdout.splitlines()[-1].split()[0]
            cli(env, "keys", "limits", key_id, "--rate", "0")
            metered_key = create_key(env, "metered", credits=10**9)
            metered_id = cli(env, "keys", "list").stdout.splitlines()[-1].split()[0]
            cli(env, "keys", "limits", metered_id, "--rate", "100000")  # counted, never reached
            bare_endpoint = Target(f"http://127.0.0.1:{port}", {})
            plain = Target(server.url, {"X-API-Key": plain_key})
            metered = Target(server.url, {"X-API-Key": metered_key}, idempotency=True)
            print("Submit path vs a bare FastAPI endpoint parsing the same model (target >= 0.50):")
            for concurrency in (1, 16):
                base, ours = compare(bare_endpoint, plain, concurrency, args.seconds)
                print(row("bare FastAPI endpoint", concurrency, base))
                print(row("fillframe submit", concurrency, ours, base), flush=True)
            print("Cost of credits + idempotency + rate limit on submit (target latency ratio < 1.3):")
            for concurrency in (1, 16):
                base, guarded = compare(plain, metered, concurrency, args.seconds)
                print(row("submit, unlimited, no guarantees", concurrency, base))
                print(row("submit, credits+idempotency+rate", concurrency, guarded, base))
                ratios = f"mean {guarded['mean'] / base['mean']:.2f}, p50 {guarded['p50'] / base['p50']:.2f}"
                print(f"{'':34} latency ratio {ratios}", flush=True)
        finally:
            server.stop()
            bare.terminate()
            bare.wait()


if __name__ == "__main__":
    main()
