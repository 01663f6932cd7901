"""The stores' keys by the time they expire, so that a sweep looks only at what is due.

Rules:

- A sweep used to look at every stored entry (~100,000 on a loaded edge): 30-40 ms of the
  event loop every 5 s, and a copy of the disk index (100,000 new tuples) that the collector
  then walked. Like Varnish's expiry binheap, the queue is a heap of (when, key, variant)
  in which :meth:`due` pops only what has expired, at most ``limit`` items per call.
- Removal is lazy: an entry that was dropped or replaced leaves its item behind, and the
  store checks each due item against what it holds now (the entry's own ``keep_until``).
  :meth:`add` says when the stale items outnumber the live ones (more than twice as many
  items as live entries, plus ``SLACK``): the store then rebuilds the heap from what it
  holds (:meth:`rebuild`), which happens once per that many puts.
- The heap is one list for the store's whole life, rebuilt in place: it stays among the
  objects that ``edge.heap.settle`` froze out of the full collections' walk.
- Pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

SLACK = 64  # stale items tolerated beyond the 2x bound (a tiny store rebuilds in no time)
Key = tuple[str, str]


class ExpiryQueue:
    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def container(self) -> list[tuple[float, str, str]]:
        """The heap's list (for edge.heap.settle)."""
        return self._heap

    def add(self, when: float, key: Key, live: int) -> bool:
        """Queue ``key`` for ``when``; True when the queue should be rebuilt (``live``: the
        number of entries the store holds)."""
        heapq.heappush(self._heap, (when, key[0], key[1]))
        return len(self._heap) > 2 * live + SLACK

    def due(self, now: float, limit: int) -> list[Key]:
        """The keys queued for ``now`` or earlier, earliest first, at most ``limit``."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now and len(out) < limit:
            _, key, variant = heapq.heappop(heap)
            out.append((key, variant))
        return out

    def rebuild(self, live: Iterable[tuple[float, Key]]) -> None:
        """Only these (when, key) items, in the same list."""
        self._heap[:] = [(when, k[0], k[1]) for when, k in live]
        heapq.heapify(self._heap)

    def clear(self) -> None:
        self._heap.clear()
