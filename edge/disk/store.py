"""The on-disk store: a byte-bounded LRU of checksummed files that survives restarts.

Rules:

- Every object the memory store keeps is also written here (write-through, in a writer thread,
  never on the event loop), so a restart finds what was cached; objects too big for the memory
  store live here alone. What is never written: hit-for-miss markers, ``Vary: *`` answers,
  expired entries, objects over ``max_bytes``.
- Bounded in bytes of file: the index (primary key -> variants, LRU order, surrogate keys)
  counts each file's size, and the least recently used files are deleted when a new one does
  not fit. A write queue holding more than ``max_pending_bytes`` drops the new write (the object
  is then in memory only) instead of growing without bound.
- One writer thread performs writes, deletes and soft-purge rewrites in the order they were
  asked for, so a delete asked after a write always wins. Files are built under ``tmp/`` and
  renamed into place (``fileformat``): no half-written object is ever under a real name.
- Start-up (nginx's cache loader): a loader thread indexes the files in the background while
  the edge serves. A request for a primary key the loader has not reached indexes that key's
  directory at once (file names are hashes of the key), so what is on disk is served from the
  first request on; a new write to a key indexes its directory first. Purges asked while the
  loader runs are also applied to the files it indexes later (all of them older than the
  purge).
- Nothing corrupt is served: a file whose header is malformed, whose length disagrees with its
  header or whose checksum fails is deleted and counted (``corrupt``), and the request is a
  miss that the origin fills again.
- Reads are split so that the event loop never waits for the device: ``locate`` finds the
  file in the index (no I/O once the key's directory is indexed; ``needs_index`` says when
  ``index_key`` must run first, in a thread, during start-up); ``read_cached`` reads a small
  file on the loop when the page cache holds all of it (``RWF_NOWAIT``: the kernel answers
  EAGAIN instead of reading the device), as nginx reads cached files in its event loop;
  otherwise ``read`` reads, checks and rebuilds it in one of the ``readers`` threads
  (``tiered.TieredStore.from_disk`` coalesces concurrent reads of one file). Both check and
  rebuild alike. ``current`` tells the loop whether a purge, a new fill or an eviction came
  in between. The index is guarded by one lock, held for index updates
  only, never for file I/O except while one key's directory is indexed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge.disk import fileformat
from edge.disk.fileformat import Record
from edge.expiry import ExpiryQueue
from edge.heap import untrack
from edge.policy.vary import vary_fields, vary_key
from edge.store import MAX_SPECS, SWEEP_LIMIT, Entry, HeadersSource

__all__ = ["DiskStats", "DiskStore", "FileMeta"]

log = logging.getLogger("geoedge.edge.disk")
# read_cached: files up to this size may be read on the event loop when the page cache holds
# them (a 4 KiB object: ~20 us there, against a thread hand-off that waits for the GIL)
CACHED_READ_MAX = 64 * 1024
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_Key = tuple[str, str]
_WRITE, _DELETE, _SOFT, _STOP = "write", "delete", "soft", "stop"


@dataclass(slots=True)
class _Meta:
    size: int
    keep_until: float
    spec: tuple[str, ...]
    tags: frozenset[str]
    soft: bool = False
    pending: int = 0  # writes queued and not yet on disk


FileMeta = _Meta  # what ``locate`` returns with a file's (key, variant)


@dataclass(slots=True)
class DiskStats:
    """Counters; the objects and bytes held are ``len(store)`` and ``store.size_bytes``."""

    loaded: bool = False
    writes: int = 0
    write_errors: int = 0
    dropped_writes: int = 0
    reads: int = 0
    cached_reads: int = 0  # of which read on the event loop from the page cache (read_cached)
    corrupt: int = 0
    evictions: int = 0
    loaded_files: int = 0


@dataclass(slots=True)
class _Held:
    specs: list[tuple[str, ...]] = field(default_factory=list)
    variants: dict[str, None] = field(default_factory=dict)


class DiskStore:
    def __init__(self, root: str | Path, max_bytes: int, rebuild: Callable[[Record], Entry],
                 builder: bytes, max_pending_bytes: int = 64 * 1024 * 1024,
                 read_threads: int = 2) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_pending_bytes = max_pending_bytes
        self._rebuild = rebuild
        self.builder = builder  # fileformat's fingerprint of what derived the stored fields
        # reads, decodes and rebuilds for the event loop (tiered.TieredStore.from_disk)
        self.readers = ThreadPoolExecutor(read_threads, thread_name_prefix="disk-read")
        self._lock = threading.RLock()
        self._index: OrderedDict[_Key, _Meta] = OrderedDict()
        self._expiry = ExpiryQueue()  # what a sweep looks at (edge/expiry.py)
        self._keys: dict[str, _Held] = {}
        self._tags: dict[str, set[_Key]] = {}
        self._loaded_keys: set[str] = set()  # key hashes whose files are indexed
        self._purges_while_loading: list[tuple[str, str, bool]] = []
        self._bytes = 0
        self._pending_bytes = 0
        self.stats = DiskStats()
        self._ops: queue.Queue[tuple[object, ...]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Create the directories (OSError names the path), clear stray temporary files, start
        the writer and the background loader."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self._writer = threading.Thread(target=self._write_loop, name="disk-writer", daemon=True)
        self._writer.start()
        self._loader = threading.Thread(target=self._load_all, name="disk-loader", daemon=True)
        self._loader.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued writes (for at most ``timeout`` seconds) and stop the threads."""
        self._stopping.set()
        if self._writer is not None:
            self._ops.put((_STOP,))
            self._writer.join(timeout)
        if self._loader is not None:
            self._loader.join(timeout)
        self.readers.shutdown(wait=False, cancel_futures=True)

    def wait_loaded(self, timeout: float | None = None) -> bool:
        if self._loader is None:
            return True
        self._loader.join(timeout)
        return not self._loader.is_alive()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every operation queued so far has been carried out (tests, shutdown)."""
        done = threading.Event()
        self._ops.put((_STOP, done))
        done.wait(timeout)

    # -- reading ----------------------------------------------------------------------------
    def peek_any(self, key: str) -> bool:
        with self._lock:
            self._ensure_dir(key)
            return key in self._keys

    def __len__(self) -> int:
        return len(self._index)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def needs_index(self, key: str) -> bool:
        """Whether ``locate`` must wait for ``index_key`` (the loader has not reached the key's
        directory yet): file I/O, for a thread."""
        return not self.stats.loaded and fileformat.key_hash(key) not in self._loaded_keys

    def index_key(self, key: str) -> None:
        """Index the files of one primary key now (the loader may not have reached them)."""
        with self._lock:
            self._ensure_dir(key)

    def locate(self, key: str, request_headers: HeadersSource,
               now: float) -> tuple[_Key, _Meta] | None:
        """The file for this request, from the index alone (no file I/O once the key is
        indexed, see ``needs_index``): its (key, variant) and index record, or None."""
        with self._lock:
            self._ensure_dir(key)
            held = self._keys.get(key)
            if held is None:
                return None
            found: tuple[_Key, _Meta] | None = None
            headers = None
            for spec in tuple(held.specs):
                if spec and headers is None:
                    headers = request_headers() if callable(request_headers) else request_headers
                variant = (vary_key(spec, headers) or "") if spec else ""
                meta = self._index.get((key, variant))
                if meta is not None and meta.spec == spec:
                    found = ((key, variant), meta)
                    break
            if found is None:
                return None
            k, meta = found
            if meta.keep_until <= now:
                self._drop([k])
                return None
            if meta.pending:  # the newest version is not on disk yet (memory has it)
                return None
            self._index.move_to_end(k)
            return found

    def read(self, k: _Key, meta: _Meta) -> Entry | None:
        """Read, check and rebuild one located file (any thread); None when it is gone or
        damaged (then deleted and counted in ``corrupt``) or no longer what was located."""
        path = fileformat.object_path(self.root, *k)
        data: bytes | None = None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._damaged(path, exc)
        return self._finish(k, meta, path, data)

    def read_cached(self, k: _Key, meta: _Meta) -> Entry | Literal[False] | None:
        """``read`` for the event loop: only when the file is small (``CACHED_READ_MAX``)
        and all of it is in the page cache, asked with ``RWF_NOWAIT`` so the read never
        waits for the device; False when the caller must ``read`` in a thread instead."""
        if _NOWAIT is None or meta.size > CACHED_READ_MAX:
            return False
        path = fileformat.object_path(self.root, *k)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return self._finish(k, meta, path, None)
        except OSError:
            return False  # the thread's read says what is wrong
        try:
            size = os.fstat(fd).st_size
            buf = bytearray(size)
            n = os.preadv(fd, [buf], 0, _NOWAIT)
        except OSError:  # EAGAIN: not (all) cached; or unsupported here
            return False
        finally:
            os.close(fd)
        if n != size:
            return False
        self.stats.cached_reads += 1
        return self._finish(k, meta, path, bytes(buf))

    def _damaged(self, path: Path, exc: Exception) -> None:
        log.warning("disk cache: %s: %s; deleted, the origin fills it again", path, exc)
        with self._lock:
            self.stats.corrupt += 1

    def _finish(self, k: _Key, meta: _Meta, path: Path, data: bytes | None) -> Entry | None:
        """Check and rebuild what was read (None: nothing could be)."""
        record: Record | None = None
        if data is not None:
            try:
                record = fileformat.decode(data)
            except ValueError as exc:
                self._damaged(path, exc)
        entry = None
        if record is not None and (record.key, record.variant) == k:
            entry = self._rebuild(record)
            if (entry.key, entry.variant) != k:
                entry = None  # the policy changed since it was stored: fill it anew
        with self._lock:
            if entry is None:
                if self._index.get(k) is meta:
                    self._drop([k])
                return None
            self.stats.reads += 1
            entry.soft_purged = entry.soft_purged or meta.soft
        return entry

    def current(self, k: _Key, meta: _Meta) -> bool:
        """Whether ``meta`` is still what the index holds for ``k`` (no purge, replacement or
        eviction since it was located)."""
        return self._index.get(k) is meta

    def get(self, key: str, request_headers: HeadersSource, now: float) -> Entry | None:
        """The stored entry for this request (soft-purged or not), or None: ``locate`` and
        ``read`` on the caller's thread (tests and tools; the proxy reads in ``readers``)."""
        found = self.locate(key, request_headers, now)
        return None if found is None else self.read(*found)

    # -- writing ----------------------------------------------------------------------------
    def put(self, entry: Entry, now: float) -> bool:
        if entry.hit_for_miss or entry.variant == "*" or entry.keep_until <= now:
            return False
        estimate = len(entry.body) + len(entry.head) + 512
        if estimate > self.max_bytes:
            return False
        if self._pending_bytes + estimate > self.max_pending_bytes:
            self.stats.dropped_writes += 1
            return False
        k = (entry.key, entry.variant)
        spec = vary_fields(entry.vary) or ()
        with self._lock:
            self._ensure_dir(entry.key)
            old = self._index.get(k)
            if old is not None:
                self._unlist(k, old)
            meta = _Meta(estimate, entry.keep_until, spec, entry.surrogate_keys,
                         entry.soft_purged, pending=1)
            self._list(k, meta)
            self._pending_bytes += estimate
            self._evict()
        self._ops.put((_WRITE, k, entry, meta))
        return True

    def remove(self, key: str) -> int:
        return self.purge_key(key, soft=False)

    def purge_key(self, key: str, soft: bool = False) -> int:
        with self._lock:
            self._ensure_dir(key)
            held = self._keys.get(key)
            keys = [] if held is None else [(key, v) for v in held.variants]
            return self._purge(keys, soft)

    def purge_prefix(self, prefix: str, soft: bool = False) -> int:
        with self._lock:
            self._note_purge("prefix", prefix, soft)
            return self._purge([k for k in self._index if k[0].startswith(prefix)], soft)

    def purge_tag(self, tag: str, soft: bool = False) -> int:
        with self._lock:
            self._note_purge("tag", tag, soft)
            return self._purge(list(self._tags.get(tag, ())), soft)

    def sweep(self, now: float, limit: int = SWEEP_LIMIT) -> int:
        """Drop the files expired by ``now`` among the next ``limit`` keys due (any thread;
        only the keys due are looked at: edge/expiry.py)."""
        with self._lock:
            index = self._index
            return self._drop([k for k in self._expiry.due(now, limit)
                               if (m := index.get(k)) is not None and m.keep_until <= now])

    def long_lived(self) -> list[object]:
        """The index containers, which live as long as the store (edge/heap.py)."""
        return [self._index, self._keys, self._tags, self._loaded_keys,
                self._expiry.container]

    def clear(self) -> None:
        with self._lock:
            self._drop(list(self._index))
            self._expiry.clear()

    # -- index (callers hold the lock) --------------------------------------------------------
    def _list(self, k: _Key, meta: _Meta) -> None:
        self._index[k] = meta
        untrack(meta, meta.tags)  # in no cycle: out of the full collections' walk
        if self._expiry.add(meta.keep_until, k, len(self._index)):
            self._expiry.rebuild([(m.keep_until, key) for key, m in self._index.items()])
        self._bytes += meta.size
        held = self._keys.get(k[0])
        if held is None:
            held = self._keys[k[0]] = _Held()
            untrack(held, held.specs)
        held.variants[k[1]] = None
        if meta.spec in held.specs:
            held.specs.remove(meta.spec)
        held.specs.insert(0, meta.spec)
        for tag in meta.tags:
            self._tags.setdefault(tag, set()).add(k)
        if len(held.specs) > MAX_SPECS:  # the same limit as the memory store
            gone = held.specs[-1]
            self._drop([(k[0], v) for v in list(held.variants)
                        if (m := self._index.get((k[0], v))) is not None and m.spec == gone])

    def _unlist(self, k: _Key, meta: _Meta) -> None:
        del self._index[k]
        self._bytes -= meta.size
        held = self._keys.get(k[0])
        if held is not None:
            held.variants.pop(k[1], None)
            if not any(m.spec == meta.spec for v in held.variants
                       if (m := self._index.get((k[0], v))) is not None):
                with contextlib.suppress(ValueError):
                    held.specs.remove(meta.spec)
            if not held.variants:
                del self._keys[k[0]]
        for tag in meta.tags:
            members = self._tags.get(tag)
            if members is not None:
                members.discard(k)
                if not members:
                    del self._tags[tag]

    def _drop(self, keys: Iterable[_Key]) -> int:
        count = 0
        for k in keys:
            meta = self._index.get(k)
            if meta is None:
                continue
            self._unlist(k, meta)
            self._ops.put((_DELETE, k))
            count += 1
        return count

    def _purge(self, keys: list[_Key], soft: bool) -> int:
        if not soft:
            return self._drop(keys)
        for k in keys:
            self._index[k].soft = True
            self._ops.put((_SOFT, k))
        return len(keys)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._index:
            k = next(iter(self._index))
            self._drop([k])
            self.stats.evictions += 1

    def _note_purge(self, kind: str, value: str, soft: bool) -> None:
        if not self.stats.loaded:  # files not indexed yet are all older than this purge
            self._purges_while_loading.append((kind, value, soft))

    # -- loading ----------------------------------------------------------------------------
    def _ensure_dir(self, key: str) -> None:
        """Index the files of ``key`` unless the loader (or an earlier call) did."""
        if self.stats.loaded:
            return
        k = fileformat.key_hash(key)
        if k not in self._loaded_keys:
            directory = fileformat.bucket(self.root, k)
            try:
                names = [n for n in os.listdir(directory) if n.startswith(k + "-")]
            except FileNotFoundError:
                names = []
            except OSError as exc:
                log.warning("disk cache: %s: %s", directory, exc)
                names = []
            self._load_files(directory, k, names)

    def _load_all(self) -> None:
        try:
            for top in sorted(os.scandir(self.root), key=lambda d: d.name):
                if len(top.name) != 2 or not top.is_dir():
                    continue
                groups: dict[str, list[str]] = {}
                for item in os.scandir(top.path):
                    if item.is_dir(follow_symlinks=False):  # a key directory (before GD2)
                        shutil.rmtree(item.path, ignore_errors=True)
                        continue
                    groups.setdefault(item.name.partition("-")[0], []).append(item.name)
                directory = Path(top.path)
                for k, names in groups.items():
                    if self._stopping.is_set():
                        return
                    with self._lock:
                        if k not in self._loaded_keys:
                            self._load_files(directory, k, names)
        except OSError as exc:
            log.warning("disk cache: loading %s stopped: %s", self.root, exc)
        finally:
            with self._lock:
                self.stats.loaded = True
                self._purges_while_loading.clear()
            log.info("disk cache: %d objects (%d bytes) loaded from %s",
                     len(self._index), self._bytes, self.root)

    def _load_files(self, directory: Path, khash: str, names: list[str]) -> None:
        """Index the files ``names`` of ``directory``, all of the key whose hash is ``khash``."""
        self._loaded_keys.add(khash)
        for name in names:
            path = directory / name
            try:
                peeked = _peek_file(path)
            except (OSError, ValueError) as exc:
                log.warning("disk cache: %s: %s; deleted", path, exc)
                self.stats.corrupt += 1
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            k = (peeked.key, peeked.variant)
            if path != fileformat.object_path(self.root, *k) or k in self._index:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            soft = peeked.soft
            purged = False
            for kind, value, soft_purge in self._purges_while_loading:
                hit = (peeked.key.startswith(value) if kind == "prefix"
                       else value in peeked.tags)
                if hit and soft_purge:
                    soft = True
                purged = purged or (hit and not soft_purge)
            if purged:
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            self._list(k, _Meta(peeked.size, peeked.keep_until, vary_fields(peeked.vary) or (),
                                peeked.tags, soft))
            self.stats.loaded_files += 1
            if soft and not peeked.soft:
                self._ops.put((_SOFT, k))
        self._evict()

    # -- the writer thread ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            op = self._ops.get()
            kind = op[0]
            if kind == _STOP:
                if len(op) > 1:
                    op[1].set()  # type: ignore[attr-defined]
                    continue
                return
            try:
                if kind == _WRITE:
                    self._write(*op[1:])  # type: ignore[arg-type]
                elif kind == _DELETE:
                    path = fileformat.object_path(self.root, *op[1])  # type: ignore[misc]
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                elif kind == _SOFT:
                    self._soft(op[1])  # type: ignore[arg-type]
            except (OSError, ValueError) as exc:
                self.stats.write_errors += 1
                log.warning("disk cache: %s failed: %s", kind, exc)

    def _write(self, k: _Key, entry: Entry, meta: _Meta) -> None:
        size = 0
        try:
            data = fileformat.encode(entry, self.builder)
            size = len(data)
            self._atomic_write(fileformat.object_path(self.root, *k), data)
            self.stats.writes += 1
        finally:
            with self._lock:
                self._pending_bytes -= len(entry.body) + len(entry.head) + 512
                meta.pending -= 1
                if self._index.get(k) is meta:
                    if size:
                        self._bytes += size - meta.size
                        meta.size = size
                        self._evict()
                    else:  # the write failed: nothing of it is on disk
                        self._drop([k])

    def _soft(self, k: _Key) -> None:
        path = fileformat.object_path(self.root, *k)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        self._atomic_write(path, fileformat.with_soft(data))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        tmp = self.root / "tmp" / uuid.uuid4().hex
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:  # the first file of its bucket: make the bucket once
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def _peek_file(path: Path) -> fileformat.Peeked:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(fileformat.PREFIX_BYTES)
        need = fileformat.head_bytes_needed(head)
        if need > len(head):
            head += f.read(need - len(head))
    return fileformat.peek(head, size)
