"""One worker's life, the same for `fillframe worker` and for the worker inside `fillframe serve`:
start it (its engines load in child processes, in the background), run it until told to stop,
then stop it gracefully: running jobs get the grace period to finish, then are handed back.

Imports nothing heavy: an API process without a worker imports this module but never the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fillframe.jobs.worker import Worker

log = logging.getLogger("fillframe.worker")


class WorkerRun:
    """A started worker: set `stop` to end it; `ready` once its engines loaded; `failure` when it
    ended on its own (its engine failed to load, or its loop raised), and `on_failure` hears of
    that at once."""

    def __init__(
        self, worker: Worker, grace: float, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        self.worker = worker
        self.grace = grace
        self.stop = asyncio.Event()
        self.ready = False
        self._on_failure = on_failure
        self.task = asyncio.create_task(self._start_and_run())
        self.task.add_done_callback(self._ended)

    def _ended(self, _task: asyncio.Task[None]) -> None:
        failure = self.failure
        if failure is None:
            return
        # A crash keeps its traceback; an engine's refusal to load is its own sentence.
        log.critical("%s", self.failure_message(), exc_info=failure if self.ready else None)
        if self._on_failure is not None:
            self._on_failure(failure)

    def failure_message(self) -> str | None:
        """One line for the operator when the worker ended on its own, else None."""
        failure = self.failure
        if failure is None:
            return None
        return f"The worker {'stopped' if self.ready else 'could not start'}: {failure}"

    async def _start_and_run(self) -> None:
        starting = asyncio.ensure_future(self.worker.start())
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():  # stopped while the engines were still loading
            starting.cancel()
            await self.worker.close()
            return
        starting.result()
        self.ready = True
        log.info("worker %s running engine %s", self.worker.id, self.worker.engine_name)
        await self.worker.run(self.stop)

    async def until_done(self) -> None:
        """Wait until `stop` is set or the worker ends on its own."""
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([self.task, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()

    @property
    def failure(self) -> BaseException | None:
        if not self.task.done() or self.task.cancelled():
            return None
        return self.task.exception()

    async def close(self) -> None:
        """Stop: running jobs get `grace` seconds to finish, then are handed back to the queue."""
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), self.grace)
        except TimeoutError:
            self.worker.shutdown_running()
            await asyncio.wait_for(self.task, 10)
        except Exception:
            pass  # its own failure, already in `failure`
        await self.worker.close()  # when it never got to run (its engines were still loading)


@contextlib.asynccontextmanager
async def worker_running(
    worker: Worker, grace: float, on_failure: Callable[[BaseException], None] | None = None
) -> AsyncIterator[WorkerRun]:
    """Run `worker` for the block's lifetime; at its end, stop it gracefully within `grace`."""
    run = WorkerRun(worker, grace, on_failure)
    try:
        yield run
    finally:
        await run.close()
