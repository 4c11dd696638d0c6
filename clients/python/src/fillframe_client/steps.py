"""The steps a flow yields (`Send`, `Sleep`) and what a driver sends back (`Reply`, `TransportFailure`).

A flow is a plain generator, so it does no I/O: the sync and async drivers carry its steps out.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """One HTTP request. `path` is relative to the base URL, or absolute (`auth` then off)."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class TransportFailure:
    """The request never got an answer (connection refused, reset, timed out)."""

    error: Exception


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow: TypeAlias = Generator[Send | Sleep, Reply | TransportFailure | None, T]
