"""A Hypothesis state machine over a job's whole life on a real database, with fake time:
submit, claim, heartbeat, lease expiry and the sweeper, finish (alone or with the next claim),
fail, cancel, release and retention, in any order, by several workers at once.

After every step: a job ends exactly once and its end never changes; each metered job's ledger
is its hold and then exactly one capture (COMPLETED) or refund (anything else), nothing before
its end; every balance is the sum of its ledger; the outbox holds exactly one final event for
each ended job that asked for webhooks, and none for the others; no account runs more jobs than
its `max_concurrent_jobs`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fillframe import billing
from fillframe.accounts import Caller
from fillframe.clock import FakeClock
from fillframe.db import (
    Database,
    credit_ledger,
    jobs,
    metadata,
    webhook_deliveries,
)
from fillframe.jobs import queue, retention, service, states
from fillframe.jobs.service import NotCancellable, Outcome, StoredFile
from fillframe.settings import Settings
from fillframe.storage import BlobStore, Linker
from tests.jobs.tenants import submit, tenant

LEASE = 30.0
RETENTION = timedelta(hours=1)
WORKERS = ("w1", "w2", "w3")
HOOK = "https://receiver.example/hook"


@dataclass
class Job:
    account: int
    metered: bool
    webhook: bool
    ended: str | None = None  # the status its one end gave it
    ends: int = 0


def _machine(url: str, blobs: Path) -> type[RuleBasedStateMachine]:
    class JobLife(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = FakeClock()
            self.db = Database(url)
            self.store = BlobStore(Settings(data_dir=blobs, database_url=url).storage)
            self.linker = Linker(self.store, b"k" * 32, "http://fillframe.test")
            self.callers: list[Caller] = []
            self.limits: list[int] = []
            self.jobs: dict[str, Job] = {}
            self.held: dict[str, str] = {}  # worker -> the job it believes it runs

        def run(self, coro):  # type: ignore[no-untyped-def]
            return self.loop.run_until_complete(coro)

        def end(self, job_id: str, status: str) -> None:
            job = self.jobs[job_id]
            job.ends += 1
            job.ended = status

        @initialize()
        def tenants(self) -> None:
            # A metered account with room for two jobs, an unlimited one with room for one.
            self.callers = [
                self.run(tenant(self.db, "metered", credits=100_000, concurrency=2)),
                self.run(tenant(self.db, "unlimited", concurrency=1)),
            ]
            self.limits = [2, 1]

        @rule(account=st.sampled_from([0, 1]), webhook=st.booleans())
        def submit(self, account: int, webhook: bool) -> None:
            hook = HOOK if webhook else None
            # Distinct submit times make the claim order depend on the steps alone, not on the
            # random ids that break ties: Hypothesis replays a run and needs the same path.
            self.clock.advance(0.001)
            (job_id,) = self.run(submit(self.db, self.callers[account], clock=self.clock, webhook_url=hook))
            self.jobs[job_id] = Job(account, account == 0, webhook)

        @rule(worker=st.sampled_from(WORKERS))
        def claim(self, worker: str) -> None:
            row = self.run(queue.claim(self.db, worker, LEASE, clock=self.clock))
            if row is not None:
                assert self.jobs[row["id"]].ended is None
                self.held[worker] = row["id"]

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def heartbeat(self, data: st.DataObject) -> None:
            worker = data.draw(st.sampled_from(sorted(self.held)))
            flag = self.run(queue.heartbeat(self.db, self.held[worker], worker, LEASE, 50, clock=self.clock))
            if flag is None:  # the lease was lost: the job is no longer this worker's
                del self.held[worker]

        @rule(seconds=st.sampled_from([1.0, 10.0, LEASE + 1, RETENTION.total_seconds() + 1]))
        def time_passes(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @rule()
        def sweep(self) -> None:
            for job_id in self.run(queue.requeue_expired(self.db, clock=self.clock)):
                job = self.jobs[job_id]
                if self.run(service.finish_abandoned(self.db, job_id, RETENTION, clock=self.clock)):
                    self.end(job_id, self.status(job_id))
                    assert job.ended in (states.FAILED, states.CANCELLED)

        @precondition(lambda self: self.held)
        @rule(
            data=st.data(),
            status=st.sampled_from([states.COMPLETED, states.FAILED, states.CANCELLED]),
            claim_next=st.booleans(),
        )
        def finish(self, data: st.DataObject, status: str, claim_next: bool) -> None:
            worker = data.draw(st.sampled_from(sorted(self.held)))
            job_id = self.held.pop(worker)
            if status == states.COMPLETED:
                file_id = str(uuid.uuid4())
                outcome = Outcome.completed(
                    [StoredFile(file_id, f"outputs/{file_id}.png", "png", "image/png", 9)]
                )
            else:
                outcome = Outcome.failed(
                    "cancelled" if status == states.CANCELLED else "engine_error", "It ended."
                )
            finished = self.run(
                service.finish(
                    self.db, job_id, outcome, worker_id=worker, retention=RETENTION, linker=self.linker,
                    has_webhook=self.jobs[job_id].webhook, claim_lease=LEASE if claim_next else None,
                    clock=self.clock,
                )
            )  # fmt: skip
            if finished.ended:
                self.end(job_id, status)
            else:
                assert finished.refused is not None
            if finished.next_job is not None:
                self.held[worker] = finished.next_job["id"]

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(list(self.jobs)))  # in submission order
            job = self.jobs[job_id]
            try:
                now = self.run(
                    service.cancel(self.db, job_id, self.callers[job.account].account_id, clock=self.clock)
                )
            except NotCancellable as exc:
                assert job.ended == exc.status
                return
            assert job.ended is None
            if now == states.CANCELLED:
                self.end(job_id, states.CANCELLED)
            else:
                assert now == states.PROCESSING

        @precondition(lambda self: self.held)
        @rule(data=st.data())
        def release(self, data: st.DataObject) -> None:
            worker = data.draw(st.sampled_from(sorted(self.held)))
            self.run(queue.release(self.db, self.held.pop(worker), worker, clock=self.clock))

        @rule()
        def purge(self) -> None:
            while self.run(retention.purge(self.db, self.store, clock=self.clock)):
                pass

        def status(self, job_id: str) -> str:
            return self.rows()[job_id]["status"]

        def rows(self) -> dict[str, dict]:
            async def read() -> dict[str, dict]:
                async with self.db.read() as conn:
                    return {r["id"]: dict(r) for r in (await conn.execute(sa.select(jobs))).mappings()}

            return self.run(read())

        @invariant()
        def each_job_ends_once_and_stays_ended(self) -> None:
            rows = self.rows()
            for job_id, job in self.jobs.items():
                assert job.ends <= 1, job_id
                if job.ended is None:
                    assert rows[job_id]["status"] in (states.QUEUED, states.PROCESSING)
                else:
                    assert rows[job_id]["status"] == job.ended
            running = Counter(self.job_account(r) for r in rows.values() if r["status"] == states.PROCESSING)
            assert all(running[i] <= limit for i, limit in enumerate(self.limits))

        def job_account(self, row: dict) -> int:
            return self.jobs[row["id"]].account

        @invariant()
        def credits_follow_the_status(self) -> None:
            async def read() -> tuple[list, list, dict]:
                async with self.db.read() as conn:
                    ledger = (
                        await conn.execute(
                            sa.select(credit_ledger.c.job_id, credit_ledger.c.kind).order_by(
                                credit_ledger.c.id
                            )
                        )
                    ).all()
                    outbox = (
                        await conn.execute(sa.select(webhook_deliveries.c.job_id, webhook_deliveries.c.event))
                    ).all()
                    balances = {}
                    for caller in self.callers:
                        balances[caller.account_id] = (
                            await billing.balance(conn, caller.account_id),
                            await billing.ledger_sum(conn, caller.account_id),
                        )
                    return ledger, outbox, balances

            ledger, outbox, balances = self.run(read())
            kinds: dict[str, list[str]] = {}
            for job_id, kind in ledger:
                if job_id is not None:
                    kinds.setdefault(job_id, []).append(kind)
            events = Counter(outbox)
            for job_id, job in self.jobs.items():
                settled = {None: [], states.COMPLETED: ["capture"]}.get(job.ended, ["refund"])
                assert kinds.get(job_id, []) == (["hold", *settled] if job.metered else []), job_id
                wanted = job.webhook and job.ended is not None
                event = "completed" if job.ended == states.COMPLETED else "failed"
                assert sum(n for (j, _), n in events.items() if j == job_id) == (1 if wanted else 0), job_id
                if wanted:
                    assert events[(job_id, event)] == 1
            for balance, total in balances.values():
                assert balance == total

        def teardown(self) -> None:
            async def wipe() -> None:
                async with self.db.write() as conn:
                    # Every table, those that point at others first: the next example starts empty.
                    for table in reversed(metadata.sorted_tables):
                        await conn.execute(table.delete())
                await self.db.close()

            try:
                self.run(wipe())
            finally:
                self.loop.close()

    return JobLife


def test_a_job_ends_once_and_its_credits_and_webhook_follow(database_url: str, tmp_path: Path) -> None:
    run_state_machine_as_test(
        _machine(database_url, tmp_path / "blobs"),
        settings=settings(max_examples=20, stateful_step_count=30, deadline=None),
    )
