"""Prometheus metrics: in-process histograms and counters, plus figures read from the database at
scrape time (jobs by status, queue depth and age, credits), which are true across every process
that shares the database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fillframe.db import Database, credit_ledger, jobs, utcnow
from fillframe.engines.host import rss_bytes

REGISTRY = CollectorRegistry()

HTTP_LATENCY = Histogram(
    "fillframe_http_request_duration_seconds",
    "HTTP request latency by route template and status.",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "fillframe_job_duration_seconds",
    "Time from claim to finish, by engine and final status (this process's workers).",
    ["engine", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
ENGINE_RESTARTS = Counter(
    "fillframe_engine_restarts_total",
    "Engine host processes replaced (this process's workers), by reason: crash, timeout, cancel "
    "(ignored), memory (over the limit), abandoned.",
    ["reason"],
    registry=REGISTRY,
)


class HostInfo(Protocol):
    pid: int | None  # None while (re)starting
    ready_at: float  # time.time() the current process became ready


class EngineHostCollector(Collector):
    """Memory and start time of this process's engine host processes, read at scrape time."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostInfo] = {}

    def track(self, slot: str, host: HostInfo) -> None:
        self.hosts[slot] = host

    def forget(self, host: object) -> None:
        self.hosts = {slot: h for slot, h in self.hosts.items() if h is not host}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        memory = GaugeMetricFamily(
            "fillframe_engine_host_memory_bytes",
            "Resident memory of each engine host process.",
            labels=["slot"],
        )
        ready = GaugeMetricFamily(
            "fillframe_engine_host_ready_timestamp_seconds",
            "When each engine host process last became ready (a restart moves it).",
            labels=["slot"],
        )
        for slot, host in sorted(self.hosts.items()):
            memory.add_metric([slot], rss_bytes(host.pid) if host.pid else 0)
            ready.add_metric([slot], host.ready_at)
        yield memory
        yield ready


ENGINE_HOSTS = EngineHostCollector()
REGISTRY.register(ENGINE_HOSTS)


class DatabaseCollector(Collector):
    """Serves the last snapshot taken by `refresh` (scrapes call refresh first)."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    async def refresh(self, db: Database) -> None:
        captured = sa.select(sa.func.coalesce(sa.func.sum(-credit_ledger.c.amount), 0)).where(
            credit_ledger.c.kind == "hold",
            credit_ledger.c.job_id.in_(
                sa.select(credit_ledger.c.job_id).where(credit_ledger.c.kind == "capture")
            ),
        )
        refunded = sa.select(sa.func.coalesce(sa.func.sum(credit_ledger.c.amount), 0)).where(
            credit_ledger.c.kind == "refund"
        )
        async with db.read() as conn:
            by_status = (
                await conn.execute(
                    sa.select(jobs.c.status, jobs.c.model, sa.func.count()).group_by(
                        jobs.c.status, jobs.c.model
                    )
                )
            ).all()
            oldest = await conn.scalar(
                sa.select(sa.func.min(jobs.c.created_at)).where(jobs.c.status == "QUEUED")
            )
            self.snapshot = {
                "jobs": [(s, m, int(n)) for s, m, n in by_status],
                "oldest": oldest,
                "captured": int(await conn.scalar(captured) or 0),
                "refunded": int(await conn.scalar(refunded) or 0),
                "at": time.time(),
            }

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self.snapshot
        if not snap:
            return
        by_status = GaugeMetricFamily(
            "fillframe_jobs", "Jobs by status and model.", labels=["status", "model"]
        )
        depth = 0
        for status, model, count in snap["jobs"]:
            by_status.add_metric([status, model], count)
            depth += count if status == "QUEUED" else 0
        yield by_status
        yield GaugeMetricFamily("fillframe_queue_depth", "Jobs waiting in the queue.", value=depth)
        oldest = snap["oldest"]
        age = (utcnow() - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
        yield GaugeMetricFamily(
            "fillframe_queue_oldest_age_seconds", "Age of the oldest queued job.", value=age
        )
        yield CounterMetricFamily(
            "fillframe_credits_captured", "Credits captured for completed jobs.", value=snap["captured"]
        )
        yield CounterMetricFamily(
            "fillframe_credits_refunded",
            "Credits refunded for failed or cancelled jobs.",
            value=snap["refunded"],
        )


DATABASE = DatabaseCollector()
REGISTRY.register(DATABASE)


async def exposition(db: Database) -> bytes:
    await DATABASE.refresh(db)
    return generate_latest(REGISTRY)
