"""Submit throughput and latency of `POST /v2/images/edit`, as ratios measured in the same run.

1. Fillframe (`fillframe serve --no-worker`, SQLite) against a bare FastAPI endpoint that parses
   the same request model and answers the same 202 (uvicorn, same settings), at concurrency 1 and
   16. Target: at least 0.5 of the bare endpoint's throughput.
2. The cost of the guarantees: submit with a metered account (credit hold), a fresh
   Idempotency-Key per request and the per-key rate limit on, against submit on an unlimited key
   with no idempotency key and the rate limit off. Target: under 1.3x the latency.

The body is the seed page's example. Usage: .venv/bin/python -m bench.api [--seconds 8]
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
from pathlib import Path
from typing import Any

import httpx

from fillframe.contract import EditRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.utils.servers import LiveServer, cli, create_key, fillframe_env, free_port, wait_until_up

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


async def load(url: str, headers: dict[str, str], concurrency: int, seconds: float, idem: bool) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one_client() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                extra = {"Idempotency-Key": uuid.uuid4().hex} if idem else {}
                start = time.perf_counter()
                response = await client.post("/v2/images/edit", json=SEED_BODY, headers=extra)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 202:
                    errors += 1

        start = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "errors": errors,
    }


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
            bare_url = f"http://127.0.0.1:{port}"
            plain = {"X-API-Key": plain_key}
            metered = {"X-API-Key": metered_key}
            print("Submit path vs a bare FastAPI endpoint parsing the same model (target >= 0.50):")
            for concurrency in (1, 16):
                base = asyncio.run(load(bare_url, {}, concurrency, args.seconds, False))
                ours = asyncio.run(load(server.url, plain, concurrency, args.seconds, False))
                print(row("bare FastAPI endpoint", concurrency, base))
                print(row("fillframe submit", concurrency, ours, base), flush=True)
            print("Cost of credits + idempotency + rate limit on submit (target latency ratio < 1.3):")
            for concurrency in (1, 16):
                bare_submit = asyncio.run(load(server.url, plain, concurrency, args.seconds, False))
                guarded = asyncio.run(load(server.url, metered, concurrency, args.seconds, True))
                print(row("submit, unlimited, no guarantees", concurrency, bare_submit))
                print(row("submit, credits+idempotency+rate", concurrency, guarded, bare_submit))
                print(f"{'':34} latency ratio p50 {guarded['p50'] / bare_submit['p50']:.2f}", flush=True)
        finally:
            server.stop()
            bare.terminate()
            bare.wait()


if __name__ == "__main__":
    main()
