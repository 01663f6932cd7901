"""Where static bytes come from: files under the content root, safely; ETags, cached.

Rules:

* URL path -> file (``safe_segments``, pure): the *decoded* path must start with ``/``; it
  may not contain NUL or backslash, an empty segment (``//``) other than a final one, or a
  segment that is ``.``, ``..`` or starts with ``.`` (so ``%2e%2e``, ``/.git/config`` and
  ``/../etc`` are all refused). Refused paths are 404, like missing files.
* ``open_in_root`` (blocking; run it in a thread): joins the segments under the root,
  resolves symlinks, and refuses (None -> 404) anything that resolves outside the resolved
  root -- so a symlink inside the root pointing outside it is refused, one pointing inside is
  followed. A directory is served by its ``index.html`` (with or without a trailing slash);
  a directory without one is 404. Only regular files are served. The resolved final path is
  opened with O_NOFOLLOW and fstat'ed, and the same descriptor is then hashed and read, so the
  validators describe the bytes served even if the file is replaced (renamed over) meanwhile.
  A file rewritten *in place* during a response can still tear; this is a demo origin.
* ETag: ``"`` + the first 32 hex digits of SHA-256 of the bytes + ``"`` -- strong, since it is
  derived from the exact content. ``EtagCache`` remembers it per resolved path together with
  ``(mtime_ns, size)``; any change of either re-hashes. It holds at most ``max_entries`` paths
  (oldest dropped first).
* Last-Modified is the file's mtime in whole seconds.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DiskFile", "EtagCache", "MemoryFile", "etag_from_digest", "etag_of_bytes",
           "hash_fd", "open_in_root", "safe_segments"]

CHUNK = 256 * 1024


def etag_from_digest(hexdigest: str) -> str:
    return f'"{hexdigest[:32]}"'


def etag_of_bytes(data: bytes) -> str:
    return etag_from_digest(hashlib.sha256(data).hexdigest())


@dataclass(frozen=True, slots=True)
class MemoryFile:
    """A representation held in memory (the virtual files)."""

    url_path: str
    data: bytes
    etag: str
    last_modified: int


@dataclass(frozen=True, slots=True)
class DiskFile:
    """An open file under the root; the caller closes ``fd``."""

    url_path: str  # the URL path of the file actually served (index.html for directories)
    path: str  # resolved filesystem path
    fd: int
    size: int
    mtime_ns: int

    @property
    def last_modified(self) -> int:
        return self.mtime_ns // 1_000_000_000


def safe_segments(url_path: str) -> list[str] | None:
    """The path's segments (last one "" for a trailing slash), or None if refused."""
    if not url_path.startswith("/") or "\x00" in url_path or "\\" in url_path:
        return None
    segments = url_path[1:].split("/")
    for i, seg in enumerate(segments):
        if seg == "" and i != len(segments) - 1:
            return None
        if seg.startswith("."):
            return None
    return segments


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def open_in_root(root: Path, url_path: str) -> DiskFile | None:
    """Open the file ``url_path`` names under ``root`` (already resolved), or None."""
    segments = safe_segments(url_path)
    if segments is None:
        return None
    try:
        target = root.joinpath(*segments).resolve(strict=True)
        if not _inside(target, root):
            return None
        served = url_path
        if target.is_dir():
            target = (target / "index.html").resolve(strict=True)
            if not _inside(target, root):
                return None
            served = url_path.rstrip("/") + "/index.html"
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, RuntimeError):  # missing, unreadable, symlink loop
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return DiskFile(served, str(target), fd, st.st_size, st.st_mtime_ns)


def hash_fd(fd: int, size: int) -> str:
    """The ETag of the first ``size`` bytes of ``fd`` (blocking)."""
    h = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return etag_from_digest(h.hexdigest())


class EtagCache:
    """ETags per resolved path, valid while (mtime_ns, size) is unchanged."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._entries: dict[str, tuple[int, int, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, f: DiskFile) -> str | None:
        entry = self._entries.get(f.path)
        if entry is not None and entry[:2] == (f.mtime_ns, f.size):
            return entry[2]
        return None

    def put(self, f: DiskFile, etag: str) -> None:
        self._entries.pop(f.path, None)
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[f.path] = (f.mtime_ns, f.size, etag)
