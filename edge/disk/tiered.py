"""Memory in front of disk, behind the interface of ``edge.store.MemoryStore``.

Rules:

- Reads try memory first; a memory miss that the disk holds is rebuilt with the proxy's
  ``make_entry`` (the same Age and freshness as before the restart: ``meta.response_time``
  is stored) and promoted into memory. The request's selecting headers come from the caller,
  which computes them once per request (``EdgeApp.origin_view`` keeps them on the request).
- Writes go to both (the disk in its writer thread); ``put`` is True when either kept the
  entry, so an object too large for memory is still cached, on disk.
- Purges, removals, sweeps and ``clear`` apply to both; the count returned is the larger of
  the two (the disk holds what memory holds, and more).
- ``len``, ``size_bytes`` and ``max_bytes`` are the memory store's; ``disk`` is there for
  the disk's own statistics.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.disk.store import DiskStore
from edge.store import Entry, HeadersSource, MemoryStore
from edge.tier.entrycodec import DecodedEntry

__all__ = ["TieredStore", "rebuilder"]

def rebuilder(make_entry: Callable[..., Entry]) -> Callable[[DecodedEntry], Entry]:
    def rebuild(decoded: DecodedEntry) -> Entry:
        entry = make_entry(decoded.key, decoded.meta, decoded.body, decoded.surrogate_keys)
        entry.soft_purged = decoded.soft_purged
        return entry
    return rebuild


class TieredStore:
    def __init__(self, memory: MemoryStore, disk: DiskStore,
                 rebuild: Callable[[DecodedEntry], Entry]) -> None:
        self.memory = memory
        self.disk = disk
        self._rebuild = rebuild
        self.max_bytes = memory.max_bytes
        self.max_variants = memory.max_variants

    def get(self, key: str, request_headers: HeadersSource, now: float) -> Entry | None:
        entry = self.memory.get(key, request_headers, now)
        if entry is not None:
            return entry
        found = self.disk.get(key, request_headers, now)
        if found is None:
            return None
        decoded, soft = found
        entry = self._rebuild(decoded)
        entry.soft_purged = soft
        if (entry.key, entry.variant) != (decoded.key, decoded.variant):
            return None  # policy changed since it was stored: let the origin fill it anew
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
        return max(self.memory.sweep(now), self.disk.sweep(now))

    def clear(self) -> None:
        self.memory.clear()
        self.disk.clear()


def open_store(memory: MemoryStore, disk_path: str, disk_max_bytes: int,
               make_entry: Callable[..., Entry]) -> MemoryStore | TieredStore:
    """The memory store alone, or memory in front of a disk store at ``disk_path`` (not started
    yet: ``start_store``)."""
    if not disk_path:
        return memory
    rebuild = rebuilder(make_entry)
    return TieredStore(memory, DiskStore(disk_path, disk_max_bytes, rebuild), rebuild)


def start_store(store: MemoryStore | TieredStore) -> None:
    """Start the disk store's threads; OSError (naming the path) when it cannot be used."""
    if isinstance(store, TieredStore):
        store.disk.start()


def close_store(store: MemoryStore | TieredStore) -> None:
    """Write what is queued and stop the disk store's threads (memory alone: nothing)."""
    if isinstance(store, TieredStore):
        store.disk.stop()
