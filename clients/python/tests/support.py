"""Helpers for the client's tests, stdlib only: tiny PNGs, and what the fixtures hand out."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def png(width: int, height: int, pixel: Callable[[int, int], int | tuple[int, int, int]]) -> bytes:
    """An 8-bit PNG; `pixel(x, y)` gives an int (greyscale) or an (r, g, b) tuple."""
    first = pixel(0, 0)
    channels = 1 if isinstance(first, int) else 3
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            value = pixel(x, y)
            rows.extend([value] if isinstance(value, int) else value)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, read from its header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@dataclass(frozen=True)
class Files:
    image: Path
    mask: Path
    small_mask: Path
    size: tuple[int, int]


@dataclass(frozen=True)
class Live:
    url: str
    api_key: str
