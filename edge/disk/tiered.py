"""Memory in front of disk, behind the interface of ``edge.store.MemoryStore``.

Rules:

- ``get`` is the memory store's alone: synchronous, no file I/O, what the proxy's fast path
  (``EdgeApp.fast``) sees. A memory miss the disk may hold is the slow path's:
  ``await from_disk(...)`` locates the file in the disk index on the event loop, then reads,
  checks and rebuilds it: on the loop when it is small and all in the page cache
  (``DiskStore.read_cached``), otherwise in one of the disk store's reader threads while the
  loop serves other requests; concurrent look-ups of the same file wait for the same read.
  The request's selecting headers come from the caller, which computes them once per
  request (``EdgeApp.origin_view`` keeps them on the request).
- What a read brings back is used only if the disk index still holds the very record that
  was located (``DiskStore.current``): a purge, a new fill or an eviction that came in while
  the file was read wins, and the look-up is a miss (or the new fill, from memory). A used
  entry is promoted into memory with the same Age and freshness as before a restart
  (``meta.response_time`` is stored), soft-purged if either the file or the index says so.
- Entries are rebuilt from a file without the proxy when the file's builder fingerprint is
  this edge's (``builder_id``: same Via name, caching policy and compression settings) and
  it had no compressed variants; otherwise with the proxy's ``make_entry``, as a fill would.
- Writes go to both (the disk in its writer thread); ``put`` is True when either kept the
  entry, so an object too large for memory is still cached, on disk.
- Purges, removals, sweeps and ``clear`` apply to both; the count returned is the larger of
  the two (the disk holds what memory holds, and more), except for ``sweep``: the disk's
  runs in a reader thread (its index may hold far more records than memory), and the count
  is memory's.
- ``len``, ``size_bytes`` and ``max_bytes`` are the memory store's; ``disk`` is there for
  the disk's own statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import hashlib
from collections.abc import Callable

from edge.disk.fileformat import Record
from edge.disk.store import DiskStore, FileMeta
from edge.store import Entry, HeadersSource, MemoryStore

__all__ = ["TieredStore", "builder_id", "rebuilder"]

BUILDER_VERSION = 1  # bump when make_entry derives heads or lifetimes differently


def _canonical(value: object) -> object:
    """A repr-stable form: dataclasses by field, sets sorted (str hashes vary per process)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple((f.name, _canonical(getattr(value, f.name)))
                                            for f in dataclasses.fields(value)))
    if isinstance(value, set | frozenset):
        return ("set", tuple(sorted((_canonical(v) for v in value), key=repr)))
    if isinstance(value, tuple | list):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(k), _canonical(v)) for k, v in value.items()),
                                     key=lambda kv: kv[0])))
    if isinstance(value, enum.Enum):
        return repr(value)
    return value


def builder_id(*inputs: object) -> bytes:
    """The 8-byte fingerprint of what derives an entry's stored fields (the proxy passes its
    Via name, policy and compression settings)."""
    text = repr((BUILDER_VERSION, *(_canonical(v) for v in inputs)))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def rebuilder(make_entry: Callable[..., Entry], builder: bytes) -> Callable[[Record], Entry]:
    def rebuild(record: Record) -> Entry:
        if record.builder == builder and not record.compressed:
            return Entry(record.key, record.variant, record.vary, record.meta, record.body,
                         record.head, record.lifetime, record.initial_age, record.keep_until,
                         record.tags, soft_purged=record.soft, fast_until=record.fast_until)
        entry = make_entry(record.key, record.meta, record.body, record.tags)
        entry.soft_purged = record.soft
        return entry
    return rebuild


class TieredStore:
    def __init__(self, memory: MemoryStore, disk: DiskStore) -> None:
        self.memory = memory
        self.disk = disk
        self.max_bytes = memory.max_bytes
        self.max_variants = memory.max_variants
        self._reads: dict[tuple[str, str], asyncio.Task[Entry | None]] = {}

    def get(self, key: str, request_headers: HeadersSource, now: float) -> Entry | None:
        """Memory only (never blocks on a file): see ``from_disk``."""
        return self.memory.get(key, request_headers, now)

    async def from_disk(self, key: str, request_headers: HeadersSource,
                        now: float) -> Entry | None:
        """The entry the disk holds for this request (a memory miss), read off the loop."""
        disk = self.disk
        loop = asyncio.get_running_loop()
        if disk.needs_index(key):
            await loop.run_in_executor(disk.readers, disk.index_key, key)
        found = disk.locate(key, request_headers, now)
        if found is None:
            return None
        k = found[0]
        task = self._reads.get(k)
        if task is None:
            task = self._reads[k] = loop.create_task(self._read(k, found[1], now))
        # shielded: a waiter that goes away (client gone) does not cancel the others' read
        return await asyncio.shield(task)

    async def _read(self, k: tuple[str, str], meta: FileMeta, now: float) -> Entry | None:
        disk = self.disk
        try:
            entry = disk.read_cached(k, meta)  # on the loop when the page cache has it all
            if entry is False:
                entry = await asyncio.get_running_loop().run_in_executor(
                    disk.readers, disk.read, k, meta)
        finally:
            self._reads.pop(k, None)
        if entry is None or not disk.current(k, meta):
            return None  # purged, refilled or evicted while it was read
        entry.soft_purged = entry.soft_purged or meta.soft
        self.memory.put(entry, now)
        return entry

    def peek_any(self, key: str) -> bool:
        return self.memory.peek_any(key) or self.disk.peek_any(key)

    def variant_count(self, key: str) -> int:
        return self.memory.variant_count(key)

    def __len__(self) -> int:
        return len(self.memory)

    @property
    def size_bytes(self) -> int:
        return self.memory.size_bytes

    def put(self, entry: Entry, now: float) -> bool:
        in_memory = self.memory.put(entry, now)
        on_disk = self.disk.put(entry, now)
        return in_memory or on_disk

    def remove(self, key: str) -> int:
        return max(self.memory.remove(key), self.disk.remove(key))

    def purge_key(self, key: str, soft: bool = False) -> int:
        return max(self.memory.purge_key(key, soft), self.disk.purge_key(key, soft))

    def purge_prefix(self, prefix: str, soft: bool = False) -> int:
        return max(self.memory.purge_prefix(prefix, soft), self.disk.purge_prefix(prefix, soft))

    def purge_tag(self, tag: str, soft: bool = False) -> int:
        return max(self.memory.purge_tag(tag, soft), self.disk.purge_tag(tag, soft))

    def sweep(self, now: float) -> int:
        with contextlib.suppress(RuntimeError):  # the store is closing: no more sweeps
            self.disk.readers.submit(self.disk.sweep, now)
        return self.memory.sweep(now)

    def long_lived(self) -> list[object]:
        return [*self.memory.long_lived(), *self.disk.long_lived()]

    def clear(self) -> None:
        self.memory.clear()
        self.disk.clear()


def open_store(memory: MemoryStore, disk_path: str, disk_max_bytes: int,
               make_entry: Callable[..., Entry], builder: bytes) -> MemoryStore | TieredStore:
    """The memory store alone, or memory in front of a disk store at ``disk_path`` (not started
    yet: ``start_store``); ``builder``: ``builder_id`` of what ``make_entry`` derives with."""
    if not disk_path:
        return memory
    return TieredStore(memory, DiskStore(disk_path, disk_max_bytes,
                                         rebuilder(make_entry, builder), builder))


def start_store(store: MemoryStore | TieredStore) -> None:
    """Start the disk store's threads; OSError (naming the path) when it cannot be used."""
    if isinstance(store, TieredStore):
        store.disk.start()


def close_store(store: MemoryStore | TieredStore) -> None:
    """Write what is queued and stop the disk store's threads (memory alone: nothing)."""
    if isinstance(store, TieredStore):
        store.disk.stop()
