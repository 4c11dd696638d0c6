"""Per-key submit rate limits: a fixed one-minute window counted in the shared database, so
every API process sees the same count."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fillframe.db import Connection, rate_windows, upserts

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


_COUNT = upserts(
    lambda insert: (
        insert(rate_windows)
        .on_conflict_do_update(
            index_elements=["api_key_id", "window_start"], set_={"count": rate_windows.c.count + 1}
        )
        .returning(rate_windows.c.count)
    )
)


class RateLimited(Exception):
    def __init__(self, state: RateState) -> None:
        super().__init__(f"Rate limit of {state.limit} submits per minute reached.")
        self.state = state


async def count_submit(
    conn: Connection, api_key_id: str, limit: int, now: float | None = None
) -> RateState | None:
    """Count one submit in the current window; raise RateLimited past `limit` (0 = unlimited)."""
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    reset = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
    params = {"api_key_id": api_key_id, "window_start": window, "count": 1}
    count = int((await conn.execute(_COUNT[conn.dialect.name], params)).scalar_one())
    state = RateState(limit, max(0, limit - count), reset)
    if count > limit:
        raise RateLimited(state)
    return state
