"""A job's status and the one place it changes: the allowed from -> to table, and the guarded
UPDATE statements that are the only writers of `jobs.status` (and of `cancel_requested` and
`expired`, the flags that ride on a status).

Every statement is built here, once, from `CHANGES`: its WHERE clause requires a source state of
its change, so a change from a state the table does not allow matches no row and changes
nothing. The caller sees no row come back and calls `refused`, which logs the job's actual state
and returns it. queue.py (claim, requeue, release) and service.py (finish, fail, cancel) run
these statements inside their own transactions, beside the credits and the webhook they move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fillframe.db import Connection, jobs

log = logging.getLogger(__name__)

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


@dataclass(frozen=True)
class Change:
    """A named change: from any of `sources` to one of `targets`."""

    name: str
    sources: frozenset[str]
    targets: frozenset[str]


def _change(name: str, sources: set[str] | frozenset[str], targets: set[str] | frozenset[str]) -> Change:
    return Change(name, frozenset(sources), frozenset(targets))


CLAIM = _change("claim", {QUEUED}, {PROCESSING})
# A lease that ran out with attempts left: queued again for any worker.
REQUEUE = _change("requeue", {PROCESSING}, {QUEUED})
# Handed back by its own worker (shutdown): queued again, the attempt not counted.
RELEASE = _change("release", {PROCESSING}, {QUEUED})
# Its worker ends it with the engine's outcome.
FINISH = _change("finish", {PROCESSING}, TERMINAL)
# The sweeper ends a job whose lease ran out for the last time, or whose cancel was asked for.
FAIL = _change("fail", {PROCESSING}, {FAILED, CANCELLED})
CANCEL = _change("cancel", {QUEUED}, {CANCELLED})
# A running job is only flagged; its worker stops and ends it (FINISH as CANCELLED).
REQUEST_CANCEL = _change("request_cancel", {PROCESSING}, {PROCESSING})
# Retention purged its outputs: the status stays, `expired` is set.
EXPIRE = _change("expire", TERMINAL, TERMINAL)

CHANGES = {c.name: c for c in (CLAIM, REQUEUE, RELEASE, FINISH, FAIL, CANCEL, REQUEST_CANCEL, EXPIRE)}

# The table itself: every (from, to) pair some change allows. Anything else never happens.
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (source, target)
    for change in CHANGES.values()
    for source in change.sources
    for target in change.targets
    if change is not EXPIRE or source == target
)


def allows(source: str, target: str) -> bool:
    return (source, target) in ALLOWED


def _in(column: sa.ColumnElement[Any], states: frozenset[str]) -> sa.ColumnElement[bool]:
    """`=` for one state (the index's equality prefix), IN for several."""
    values = sorted(states)
    return column == values[0] if len(values) == 1 else column.in_(values)


def update(
    change: Change,
    *where: sa.ColumnElement[bool],
    to: str | sa.ColumnElement[Any] | None = None,
    **values: Any,
) -> sa.Update:
    """The guarded UPDATE for `change`: only rows in one of its source states, and `where`.

    to: the new status, a constant (checked against the change now) or an expression (a bound
    parameter: checked by the statement, which then matches no row); None keeps the status
    (the flag changes)."""
    guards = [_in(jobs.c.status, change.sources), *where]
    if isinstance(to, str):
        if to not in change.targets:
            raise ValueError(f"{change.name} cannot move a job to {to}")
        values["status"] = to
    elif to is not None:
        guards.append(_in(to, change.targets))
        values["status"] = to
    return jobs.update().where(*guards).values(**values)


@dataclass(frozen=True)
class Refused:
    """A change that matched nothing: the job was not in a state it may start from (or is gone)."""

    change: str
    job_id: str
    status: str | None  # the job's state now; None when there is no such job

    def __str__(self) -> str:
        now = f"it is {self.status}" if self.status else "there is no such job"
        return f"{self.change} of job {self.job_id} refused: {now}"


async def refused(conn: Connection, change: Change, job_id: str) -> Refused:
    """Report a change that matched no row: log it and return the job's actual state. Only on
    that (rare) path is the row read again."""
    status = await conn.scalar(sa.select(jobs.c.status).where(jobs.c.id == job_id))
    report = Refused(change.name, job_id, status)
    log.warning("%s", report)
    return report
