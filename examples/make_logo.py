"""Regenerate static/logo.png: a 64x64 RGBA PNG (a blue disc with a ring), standard library only.

Run: python examples/content/make_logo.py  -- the output is byte-for-byte deterministic.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIZE = 64


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pixel(x: int, y: int) -> bytes:
    c = (SIZE - 1) / 2
    d = ((x - c) ** 2 + (y - c) ** 2) ** 0.5
    if d > c:
        return b"\0\0\0\0"  # transparent outside the disc
    if d > c - 5:
        return bytes((255, 153, 0, 255))  # orange ring
    shade = int(200 - 120 * d / c)
    return bytes((20, 90, shade, 255))


def make_png() -> bytes:
    rows = b"".join(b"\0" + b"".join(_pixel(x, y) for x in range(SIZE)) for y in range(SIZE))
    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b""))


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "content" / "static" / "logo.png"
    out.write_bytes(make_png())
    print(f"wrote {out} ({out.stat().st_size} bytes)")
