"""Deliveries isolated per destination: a tenant whose receivers hang holds only its host's
slots, the cap per host holds at the receiver (over several deliverers sharing the database
too), and the retry schedule runs on a fake clock. In-process, on a real database, to real
receivers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa

from fillframe.accounts import Caller, authenticate, create_key
from fillframe.clock import FakeClock
from fillframe.db import Database, webhook_deliveries
from fillframe.jobs import service
from fillframe.settings import Settings
from fillframe.webhooks import deliver
from fillframe.webhooks.deliver import Deliverer, destination, in_flight_per_host, pick
from tests.utils.poll import until_async
from tests.webhooks.helpers import edit_request
from tests.webhooks.receiver import Receiver

d = webhook_deliveries


async def tenant(db: Database, name: str) -> Caller:
    api_key, _ = await create_key(db, name)
    return await authenticate(db, api_key)


async def queued_webhook(db: Database, caller: Caller, url: str, clock: FakeClock) -> str:
    """A job whose `failed` webhook to `url` is in the outbox, due at the clock's now."""
    job_id = (await service.submit(db, caller, edit_request(url), cost=0, max_attempts=3)).job_id
    payload = {"event": "failed", "jobId": job_id}
    async with db.write() as conn:
        return await deliver.enqueue(conn, job_id, "failed", url, payload, now=clock.now())


async def attempts(db: Database) -> dict[str, tuple[str, int]]:
    """webhook id -> (status, attempts made)."""
    async with db.read() as conn:
        rows = await conn.execute(sa.select(d.c.id, d.c.status, d.c.attempts))
        return {row.id: (row.status, row.attempts) for row in rows}


async def delivered(db: Database, *ids: str) -> bool:
    """Whether these deliveries (all of them, if none named) are delivered."""
    seen = await attempts(db)
    return all(seen[i][0] == "delivered" for i in ids or seen)


@contextlib.asynccontextmanager
async def delivering(db: Database, settings: Settings, clock: FakeClock) -> AsyncIterator[Deliverer]:
    """A deliverer running until the block ends; then stopped, its attempts let finish."""
    stop = asyncio.Event()
    deliverer = Deliverer(db, settings, clock)
    running = asyncio.create_task(deliverer.run(stop))
    try:
        yield deliverer
    finally:
        stop.set()
        await running


def settings_for(tmp_path: Path, database_url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path, database_url=database_url, allow_private_urls=True, poll_seconds=0.05, **extra
    )


def test_hanging_receivers_of_one_tenant_cost_only_their_own_deliveries(
    database_url: str, tmp_path: Path
) -> None:
    """Tenant A's 100 webhooks, due first, go to a receiver that never answers (until the test
    lets it); tenant B's one webhook, due last, goes out in the same claim, while A holds just
    its host's 4 slots and 96 of A's deliveries have not been tried."""
    release = threading.Event()
    settings = settings_for(
        tmp_path, database_url, webhook_concurrency=16, webhook_per_host=4, webhook_timeout_seconds=120
    )
    clock = FakeClock()

    async def scenario(hanging: Receiver, healthy: Receiver) -> None:
        db = Database(database_url)
        caller_a, caller_b = await tenant(db, "a"), await tenant(db, "b")
        a_ids = [await queued_webhook(db, caller_a, hanging.url(f"/a{i}"), clock) for i in range(100)]
        clock.advance(1)
        b_id = await queued_webhook(db, caller_b, healthy.url("/b"), clock)
        async with delivering(db, settings, clock) as deliverer:
            try:
                await until_async(lambda: delivered(db, b_id), "delivered to B")
                await asyncio.to_thread(hanging.wait_for, 4)
                seen = await attempts(db)
                tried = sorted(seen[i][1] for i in a_ids)
                assert tried == [0] * 96 + [1] * 4, "A's deliveries beyond its host's cap waited"
                assert (len(hanging.hits), hanging.open) == (4, 4)
                async with db.read() as conn:
                    busy = await in_flight_per_host(conn, clock.now())
                assert busy == {destination(hanging.url()): 4} and deliverer.in_flight == 4
            finally:
                release.set()
            await until_async(lambda: delivered(db), "all delivered")
        await db.close()

    with Receiver(hold=release) as hanging, Receiver() as healthy:
        asyncio.run(scenario(hanging, healthy))
        assert len(healthy.hits) == 1 and len(hanging.hits) == 100
        # Counted at the receiver: never more than the cap open at once, over all 100.
        assert hanging.most_open == 4
        assert sorted(h.path for h in hanging.hits) == sorted(f"/a{i}" for i in range(100))


def test_a_long_run_of_rows_for_a_full_destination_is_skipped_in_sql(
    database_url: str, tmp_path: Path
) -> None:
    """With 2 slots and 1 per host, a claim reads 8 due rows per free slot: A's 40 rows (URLs
    without a path) ahead of B's would hide it, were they not left out by the query itself."""
    release = threading.Event()
    settings = settings_for(
        tmp_path, database_url, webhook_concurrency=2, webhook_per_host=1, webhook_timeout_seconds=120
    )
    clock = FakeClock()

    async def scenario(hanging: Receiver, healthy: Receiver) -> None:
        db = Database(database_url)
        caller = await tenant(db, "a")
        for _ in range(40):
            await queued_webhook(db, caller, f"http://127.0.0.1:{hanging.port}", clock)
        clock.advance(1)
        b_id = await queued_webhook(db, await tenant(db, "b"), healthy.url(), clock)
        async with delivering(db, settings, clock):
            try:
                await until_async(lambda: delivered(db, b_id), "delivered to B")
                assert (len(hanging.hits), hanging.open) == (1, 1)
            finally:
                release.set()
        await db.close()

    with Receiver(hold=release) as hanging, Receiver() as healthy:
        asyncio.run(scenario(hanging, healthy))


def test_many_destinations_go_out_at_once(database_url: str, tmp_path: Path) -> None:
    """Twelve hanging receivers (other ports are other destinations) get one attempt each at
    once, far past the old four delivery loops; the thirteenth tenant still gets through."""
    release = threading.Event()
    settings = settings_for(tmp_path, database_url, webhook_concurrency=32, webhook_timeout_seconds=120)
    clock = FakeClock()

    async def scenario(hanging: list[Receiver], healthy: Receiver) -> None:
        db = Database(database_url)
        caller = await tenant(db, "a")
        for rx in hanging:
            await queued_webhook(db, caller, rx.url(), clock)
        clock.advance(1)
        last = await queued_webhook(db, await tenant(db, "b"), healthy.url(), clock)
        async with delivering(db, settings, clock):
            try:
                await until_async(lambda: delivered(db, last), "delivered to the last tenant")
                for rx in hanging:
                    await asyncio.to_thread(rx.wait_for, 1)
                assert [rx.open for rx in hanging] == [1] * len(hanging)
            finally:
                release.set()
        await db.close()

    receivers = [Receiver(hold=release) for _ in range(12)]
    try:
        with Receiver() as healthy:
            asyncio.run(scenario(receivers, healthy))
    finally:
        for rx in receivers:
            rx.close()


def test_retry_schedule_runs_on_a_fake_clock(database_url: str, tmp_path: Path) -> None:
    """500, 500, then 200: the second attempt comes due 5 s (+-10 %) after the first, the third
    295 s (+-10 %) after the second; nothing goes out early. No sleeping: the clock is moved."""
    settings = settings_for(tmp_path, database_url)
    clock = FakeClock()

    async def scenario(rx: Receiver) -> list[list[str]]:
        db = Database(database_url)
        await queued_webhook(db, await tenant(db, "t"), rx.url(), clock)
        deliverer = Deliverer(db, settings, clock)
        steps = []
        # Due at 0; 4.5..5.5 s after the first attempt; 265.5..324.5 s after the second.
        for seconds in (0, 4.4, 1.2, 200, 125):
            clock.advance(seconds)
            steps.append(await deliverer.deliver_due())
        await db.close()
        return steps

    with Receiver([500, 500]) as rx:
        steps = asyncio.run(scenario(rx))
        assert [h.answered for h in rx.hits] == [500, 500, 200]
    assert steps == [["pending"], [], ["pending"], [], ["delivered"]]


def test_a_410_is_the_last_attempt_even_a_day_later(database_url: str, tmp_path: Path) -> None:
    """After a 410 nothing is ever due again: the clock moves on past every retry of the schedule."""
    settings = settings_for(tmp_path, database_url)
    clock = FakeClock()

    async def scenario(rx: Receiver) -> list[list[str]]:
        db = Database(database_url)
        await queued_webhook(db, await tenant(db, "t"), rx.url(), clock)
        deliverer = Deliverer(db, settings, clock)
        steps = [await deliverer.deliver_due()]
        for seconds in (1, 60, 3600, 86400, 86400):
            clock.advance(seconds)
            steps.append(await deliverer.deliver_due())
        await db.close()
        return steps

    with Receiver([410]) as rx:
        assert asyncio.run(scenario(rx)) == [["failed"], [], [], [], [], []]
        assert [h.answered for h in rx.hits] == [410]


def test_destination_and_pick() -> None:
    assert destination("https://Hooks.Example.com/a?b") == "https://hooks.example.com:443"
    assert destination("http://h:8080/x") == destination("http://H:8080/y") == "http://h:8080"
    assert destination("http://h/x") != destination("http://h:8080/x")
    rows = [(f"a{i}", "http://a:80") for i in range(5)] + [("b", "http://b:80"), ("a9", "http://a:80")]
    assert pick(rows, {"http://a:80": 2, "http://b:80": 2}, limit=10) == ["a0", "a1", "b"]
    assert pick(rows, {"http://a:80": 2, "http://b:80": 2}, limit=2) == ["a0", "a1"]
    assert pick(rows, {"http://a:80": 1}, limit=10) == ["a0"]


def test_the_cap_per_host_holds_over_deliverers_that_share_the_database(
    database_url: str, tmp_path: Path
) -> None:
    """Two deliverers, each with its own connections (as two processes have), and a cap of 3 per
    host: the first takes 3 of A's 20 deliveries to a hanging receiver and B's one; the second
    takes none of A's (it counted the first one's in the database), so the receiver never holds
    more than 3, and B's went out meanwhile. When the first one's leases run out (as if it had
    died mid-attempt), their slots come back: the second takes 3 more."""
    release = threading.Event()
    settings = settings_for(
        tmp_path, database_url, webhook_concurrency=16, webhook_per_host=3, webhook_timeout_seconds=60
    )
    clock = FakeClock()

    async def scenario(hanging: Receiver, healthy: Receiver) -> None:
        db_one, db_two = Database(database_url), Database(database_url)
        caller_a = await tenant(db_one, "a")
        for i in range(20):
            await queued_webhook(db_one, caller_a, hanging.url(f"/a{i}"), clock)
        clock.advance(1)
        b_id = await queued_webhook(db_one, await tenant(db_one, "b"), healthy.url("/b"), clock)
        one, two = Deliverer(db_one, settings, clock), Deliverer(db_two, settings, clock)
        first: list[asyncio.Task[str]] = []
        taken_over: list[asyncio.Task[str]] = []
        try:
            first = await one.claim_and_start()
            assert len(first) == 4, "3 of A's (its host's cap) and B's"
            assert await two.claim_and_start() == [], "A's host is at its cap, counted over both"
            await until_async(lambda: delivered(db_two, b_id), "delivered to B")
            await asyncio.to_thread(hanging.wait_for, 3)
            assert (hanging.open, one.in_flight, two.in_flight) == (3, 3, 0)
            clock.advance(settings.webhook_timeout_seconds + 31)  # the first one's leases ran out
            taken_over = await two.claim_and_start()
            assert len(taken_over) == 3
            await asyncio.to_thread(hanging.wait_for, 6)
            assert await one.claim_and_start() == []
        finally:
            release.set()
        await asyncio.gather(*first, *taken_over)
        await db_one.close()
        await db_two.close()

    with Receiver(hold=release) as hanging, Receiver() as healthy:
        asyncio.run(scenario(hanging, healthy))
        assert len(healthy.hits) == 1
        assert hanging.most_open == 6
