"""Engines that misbehave, through a live `fillframe serve` on SQLite and PostgreSQL: the API
answers throughout, the bad job ends with the right errorCode and a refund, the engine's process
is replaced, and the next job completes within 2 s of the new process being ready (timestamps
from the server's own log and the job's `completedAt`, not the test's clock).

And the host on its own: pixels go through shared memory and come back exactly, progress flows,
an engine's exception keeps the process, a load failure is the engine's own sentence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from fillframe.engines.base import FillJob
from fillframe.engines.host import EngineCrashed, EngineHost, EngineLoadFailed
from fillframe.errors import EngineFailed
from fillframe.settings import Settings
from tests.test_operations import sample
from tests.utils.backends import query
from tests.utils.jobs import data_uri, edit_body, wait_job
from tests.utils.poll import until
from tests.utils.procs import gone
from tests.utils.servers import LiveServer, create_key, own_server

IMAGE = data_uri(np.full((32, 32, 3), 90, np.uint8))
MASK = data_uri(np.pad(np.full((16, 16), 255, np.uint8), 8))
COST = 9


@dataclass(frozen=True)
class Case:
    engine: str
    status: str
    error_code: str
    says: str  # in the bad job's `error`
    restart: str  # the restart reason counted in /metrics
    attempts: int  # runs of the bad job (a crash is retried, a hang or a cancel is not)
    settings: tuple[tuple[str, str], ...] = ()
    cancel: bool = False


# fmt: off
CASES = {
    "abort": Case("AbortEngine", "FAILED", "engine_error", "signal SIGABRT", "crash", 2),
    "sigkill": Case("KillSelfEngine", "FAILED", "engine_error", "signal SIGKILL", "crash", 2),
    "hang": Case(
        "HangEngine", "FAILED", "timeout", "within 3 seconds", "timeout", 1, (("job_timeout_seconds", "3"),)
    ),
    "ignores-cancel": Case("HangEngine", "CANCELLED", "cancelled", "cancelled", "cancel", 1, cancel=True),
    "leak": Case(
        "LeakEngine", "FAILED", "engine_error", "over the 400 MB limit", "memory", 2,
        (("engine_memory_limit_mb", "400"),),
    ),
}
# fmt: on


class HealthProbe:
    """GET /healthz every 50 ms on its own thread; remembers every answer that was not a 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.05):
                try:
                    status = client.get(f"{self.url}/healthz").status_code
                    if status != 200:
                        self.failures.append(str(status))
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.answers += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _ready_times(server: LiveServer, expected: int) -> list[datetime]:
    """When each engine process became ready, from the server's JSON log, once there are
    `expected` of them (the last restart may still be under way when the bad job has ended)."""
    for _ in range(600):
        times = []
        for line in server.logs().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry["msg"].startswith("engine ") and " loaded in process " in entry["msg"]:
                    times.append(datetime.fromisoformat(entry["ts"]))
        if len(times) >= expected:
            return times
        threading.Event().wait(0.05)
    raise AssertionError(f"{len(times)} engine processes became ready, expected {expected}")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _submit(client: httpx.Client, prompt: str) -> str:
    response = client.post("/v2/images/edit", json=edit_body(IMAGE, MASK, prompt=prompt))
    assert response.status_code == 202, response.text
    return response.json()["jobId"]


def _wait_ready(client: httpx.Client) -> None:
    wait_for = 60.0
    while client.get("/readyz").json()["worker"] != "ready":
        wait_for -= 0.05
        assert wait_for > 0, "the engine never loaded"
        threading.Event().wait(0.05)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_misbehaving_engine_costs_its_job_only(tmp_path: Path, backend: str, case: Case) -> None:
    with own_server(
        tmp_path / "data", backend, engine=f"tests.utils.engines:{case.engine}", max_attempts="2",
        poll_seconds="0.1", **dict(case.settings),
    ) as server:  # fmt: skip
        probe = HealthProbe(server.url)
        key = create_key(server.env, "tenant", credits=100)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as client:
            _wait_ready(client)
            bad = _submit(client, "misbehave")
            good = _submit(client, "fill it")
            if case.cancel:
                wait_job(client, bad, until={"PROCESSING"})
                while client.get(f"/v2/jobs/{bad}").json()["progress"] < 10:  # the engine has it
                    threading.Event().wait(0.05)
                assert client.post(f"/v2/jobs/{bad}/cancel").status_code == 200
            bad_job = wait_job(client, bad, timeout=60)
            good_job = wait_job(client, good, timeout=60)
            credits = client.get("/v2/me").json()["team"]["credits"]
            metrics = client.get("/metrics").text
        probe.stop()
        assert server.proc.poll() is None  # the API's process never went down
        assert probe.failures == [] and probe.answers > 10

        assert (bad_job["status"], bad_job["errorCode"]) == (case.status, case.error_code)
        assert case.says in bad_job["error"]
        assert good_job["status"] == "COMPLETED"
        assert credits == 100 - COST  # the bad job's hold came back
        ledger = query(server.env, "SELECT kind, amount FROM credit_ledger WHERE job_id = :j", j=bad)
        assert sorted(ledger) == [("hold", -COST), ("refund", COST)]
        [(attempts,)] = query(server.env, "SELECT attempts FROM jobs WHERE id = :j", j=bad)
        assert attempts == case.attempts

        assert sample(metrics, "fillframe_engine_restarts_total", reason=case.restart) == case.attempts
        readies = _ready_times(server, 1 + case.attempts)  # the first engine, then one per bad run
        completed = _when(good_job["completedAt"])
        restarted = [t for t in readies[1:] if t <= completed]
        assert restarted, "the good job completed before any restart: it did not wait for one"
        assert (completed - restarted[-1]).total_seconds() < 2.0


# --- the host alone ------------------------------------------------------------------------------


def _job(prompt: str = "fill it", side: int = 48) -> FillJob:
    rng = np.random.default_rng(7)
    mask = np.zeros((side, side + 5), np.uint8)
    mask[10:30, 12:40] = 255
    return FillJob(rgb=rng.integers(0, 256, (side, side + 5, 3), np.uint8), mask=mask, prompt=prompt, seed=3)


@contextlib.asynccontextmanager
async def hosted(tmp_path: Path, engine: str) -> AsyncIterator[EngineHost]:
    host = EngineHost(Settings(data_dir=tmp_path, engine=engine))
    await host.start()
    try:
        yield host
    finally:
        await host.close()


def test_pixels_go_through_shared_memory_and_back_exactly(tmp_path: Path) -> None:
    async def go() -> None:
        async with hosted(tmp_path, "tests.utils.engines:SleepEngine") as host:
            for side in (48, 300, 64):  # the segment grows for the larger canvas, then is reused
                job = _job(side=side)
                seen: list[int] = []
                out = await host.fill(job, seen.append, lambda: False, 30)
                expected = job.rgb.copy()
                expected[job.mask >= 128] = 128
                assert np.array_equal(out.rgb, expected)
                assert out.notes == {"engine": "sleep"}
                assert seen[-1] == 100 and seen == sorted(seen)
            assert host.name == "sleep" and host.restarts == 0

    asyncio.run(go())


def test_engine_errors_keep_their_code_and_a_crash_gets_a_new_process(tmp_path: Path) -> None:
    async def go() -> None:
        async with hosted(tmp_path, "tests.utils.engines:AbortEngine") as host:
            first = host.pid
            with pytest.raises(EngineCrashed, match="SIGABRT"):
                await host.fill(_job("misbehave"), lambda _: None, lambda: False, 30)
            out = await host.fill(_job(), lambda _: None, lambda: False, 30)
            assert out.rgb.shape == _job().rgb.shape
            assert host.pid != first and host.restarts == 1
        async with hosted(tmp_path, "tests.utils.engines:BrokenEngine") as failing:
            with pytest.raises(EngineFailed, match="The broken engine failed on this job"):
                await failing.fill(_job(), lambda _: None, lambda: False, 30)
            assert failing.restarts == 0  # an exception in the engine costs the job, not the process

    asyncio.run(go())


def test_a_process_killed_between_jobs_is_replaced_before_the_next(tmp_path: Path) -> None:
    async def go() -> None:
        async with hosted(tmp_path, "tests.utils.engines:SleepEngine") as host:
            first = host.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)  # as the OOM killer would, while it idles
            await asyncio.to_thread(until, lambda: gone(first), "the engine host killed", 10)
            out = await host.fill(_job(), lambda _: None, lambda: False, 30)
            assert out.rgb.shape == _job().rgb.shape
            assert host.pid not in (None, first) and host.restarts == 1

    asyncio.run(go())


def test_a_load_failure_is_the_engines_own_sentence(tmp_path: Path) -> None:
    async def go() -> None:
        host = EngineHost(Settings(data_dir=tmp_path, engine="bfl"))
        with pytest.raises(EngineLoadFailed, match="needs FILLFRAME_BFL_API_KEY"):
            await host.start()
        await host.close()

    asyncio.run(go())
