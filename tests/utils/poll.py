"""Waiting for something to become true: poll a check until a deadline, never a fixed sleep.

The pause between checks only spaces them out; the deadline is what fails the test, with a
message that says what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.05) -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not {what} after {timeout:g} s (last: {found!r})")
        time.sleep(every)


async def until_async(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = 60.0, every: float = 0.02
) -> T:
    """`until` for a coroutine check, pausing on the event loop between checks."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not {what} after {timeout:g} s (last: {found!r})")
        await asyncio.sleep(every)
