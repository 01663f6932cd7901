"""Virtual files: large deterministic bodies served without committing megabytes to git.

Rules:

* ``VIRTUAL_SIZES`` lists them: ``/big/1k.bin`` (1024 bytes), ``/big/64k.bin`` (65536) and
  ``/big/5mib.bin`` (5 MiB). They exist on every origin whatever the content root holds, and
  take precedence over a real file at the same path.
* Content: ``hashlib.shake_256(b"geoedge virtual file " + URL path).digest(size)`` -- the same
  bytes on every host and Python version (SHAKE256 is FIPS 202), so a test or benchmark can
  recompute any slice: ``expected_bytes(path)[a:b+1]``.
* Validators: the strong content ETag like real files (``etag_of_bytes``) and a fixed
  Last-Modified, ``VIRTUAL_MTIME`` = 2026-01-01T00:00:00Z; so every origin process, every
  restart, returns identical validators for them. Caching headers come from the config rules
  like any other path (``/big/*`` in the demo).
* ``build_virtual_files`` computes them (about 20 ms for all three); the app does it once at
  start-up, off the event loop, and keeps the bytes in memory (about 5.1 MiB per process).
"""

from __future__ import annotations

import hashlib

from origin.store import MemoryFile, etag_of_bytes

__all__ = ["VIRTUAL_MTIME", "VIRTUAL_SIZES", "build_virtual_files", "expected_bytes"]

VIRTUAL_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z
VIRTUAL_SIZES: dict[str, int] = {
    "/big/1k.bin": 1024,
    "/big/64k.bin": 64 * 1024,
    "/big/5mib.bin": 5 * 1024 * 1024,
}


def expected_bytes(url_path: str, size: int | None = None) -> bytes:
    """The content of the virtual file ``url_path`` (its first ``size`` bytes)."""
    n = VIRTUAL_SIZES[url_path] if size is None else size
    return hashlib.shake_256(b"geoedge virtual file " + url_path.encode()).digest(n)


def build_virtual_files() -> dict[str, MemoryFile]:
    out = {}
    for url_path in VIRTUAL_SIZES:
        data = expected_bytes(url_path)
        out[url_path] = MemoryFile(url_path, data, etag_of_bytes(data), VIRTUAL_MTIME)
    return out
