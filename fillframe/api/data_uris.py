"""Large data URIs are cut out of a submit's body before FastAPI parses it.

Parsing a 30 MB JSON string (json.loads, then the idempotency fingerprint's dump) is one C call
each, holding the GIL for 40-90 ms: every other request of the process waits that long, in a
thread or not. So `DataUriRoute` scans the raw body in a worker thread, 1 MB at a time, and
puts a placeholder in place of every long `"data:...` string: the header as sent, then `#` and
the SHA-256 of the whole string (`data:image/png;base64,#3f2a...`). FastAPI then parses and
validates a small body; the handler finds the cut-out strings in `request.state.data_uris`
by placeholder and decodes them, in a thread too. A placeholder that a client wrote itself
matches no cut-out string and is decoded as what it is: invalid base64, a 400.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from fillframe.errors import InvalidInput
from fillframe.imaging.fetch import let_go

P = ParamSpec("P")
T = TypeVar("T")

# One thread for all of it: the event loop's thread then waits for the GIL behind one busy
# thread, not behind one per concurrent submit (each wait a 5 ms switch interval).
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-uri")


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the blocking `fn` in the data-URI thread."""
    return await asyncio.get_running_loop().run_in_executor(_WORKER, functools.partial(fn, *args, **kwargs))


# Strings shorter than this are parsed the ordinary way: their cost is noise.
MIN_CUT = 64 * 1024
_SCAN = 1 << 18
_OPEN = b'"data:'
_HEADER_MAX = 256


def _find(body: bytes, needle: bytes, start: int, stop: int | None = None) -> int:
    """body.find(needle, start, stop), a window at a time: each call is short, so the GIL
    changes hands between them."""
    n = len(body) if stop is None else stop
    while start < n:
        end = min(start + _SCAN + len(needle) - 1, n)
        found = body.find(needle, start, end)
        if found >= 0:
            return found
        start += _SCAN
        let_go()
    return -1


def _escaped(body: bytes, at: int) -> bool:
    """Whether the quote at `at` is escaped (an odd run of backslashes before it)."""
    run = 0
    while at - run - 1 >= 0 and body[at - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def _closing_quote(body: bytes, start: int) -> int:
    at = _find(body, b'"', start)
    while at >= 0 and _escaped(body, at):
        at = _find(body, b'"', at + 1)
    return at


def _placeholder(literal: memoryview) -> str | None:
    """`data:<header as sent>,#<sha256>` for a string worth cutting, else None (leave it)."""
    head = bytes(literal[:_HEADER_MAX])
    comma = head.find(b",")
    if comma < 0:
        return None
    try:
        header: str = json.loads(b'"' + head[: comma + 1] + b'"')  # `image\/png` is image/png
    except ValueError:
        return None
    return header + "#" + hashlib.sha256(literal).hexdigest()


@dataclass(frozen=True)
class Cut:
    """One string cut out of a body: its raw JSON content is body[start:end]."""

    body: bytes
    start: int
    end: int

    def value(self) -> memoryview | str:
        """The string's value, JSON escapes (`\\/`, `\\n` from line-wrapped base64) resolved.
        Blocking; most strings have none and come back as a view of the body, uncopied."""
        view = memoryview(self.body)[self.start : self.end]
        if _find(self.body, b"\\", self.start, self.end) < 0:
            return view
        try:
            resolved: str = json.loads(b'"' + bytes(view) + b'"')
            return resolved
        except ValueError:  # the parser never saw this string: its refusal is ours to make
            raise InvalidInput("The data URI is not a valid JSON string (a bad escape).") from None


def cut_data_uris(body: bytes, min_length: int = MIN_CUT) -> tuple[bytes, dict[str, Cut]]:
    """(the body with each long data-URI string replaced by its placeholder, placeholder -> the
    string cut out). Blocking; run it in a thread. Never fails: a body that is not JSON comes
    back as it came, for the parser to refuse."""
    view = memoryview(body)
    parts: list[bytes | memoryview] = []
    found: dict[str, Cut] = {}
    copied = pos = 0
    while (start := _find(body, _OPEN, pos)) >= 0:
        # An unescaped quote before `data:` opens a string (in JSON that parses at all).
        end = -1 if _escaped(body, start) else _closing_quote(body, start + 1)
        if end < 0:
            pos = start + 1
            continue
        literal = view[start + 1 : end]
        placeholder = _placeholder(literal) if len(literal) >= min_length else None
        if placeholder is not None:
            parts += [view[copied : start + 1], json.dumps(placeholder)[1:-1].encode()]
            found[placeholder] = Cut(body, start + 1, end)
            copied = end
        pos = end + 1
    if not found:
        return body, {}
    parts.append(view[copied:])
    return b"".join(parts), found


class _SmallBody(Request):
    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.scope, request.receive)
        self._small = body

    async def body(self) -> bytes:
        return self._small


class DataUriRoute(APIRoute):
    """A route whose long data URIs are cut out (in a thread) before its body is parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            # Read here rather than by request.body(): its join of a 30 MB body is one copy
            # (and 7,500 fresh pages) on the loop's thread; here the join is in the thread.
            chunks = [chunk async for chunk in request.stream()]
            found: dict[str, Cut] = {}
            if sum(map(len, chunks)) < MIN_CUT:
                body = b"".join(chunks)
            else:
                body = await off_loop(b"".join, chunks)
                del chunks  # 30 MB less held while the rest runs
                body, found = await off_loop(cut_data_uris, body)
            request.state.data_uris = found
            return await handle(_SmallBody(request, body))

        return route
