"""What the edge keeps out of CPython's cyclic garbage collector.

Rules:

- A stored object is in no reference cycle: an ``Entry``, its ``StoredMeta``, the dict of its
  encoded variants (and theirs), the memory store's per-key variant record and the disk
  index's per-file record hold only strings, bytes, numbers, tuples and one another, downward.
  Reference counting frees each when it is evicted, purged or replaced. Yet each full
  (generation 2) collection walks every tracked object with the event loop stopped: with
  100,000 entries (~900,000 tracked objects) that was 0.6-1.8 s per collection, one every few
  seconds under load, and the edge's p99 latency (docs/benchmarks.md, "Edge at scale").
- So the stores hand what they keep to :func:`untrack` (CPython's ``PyObject_GC_UnTrack``).
  This is safe for the collector: a reference from an untracked object counts as one from
  outside, so what it holds stays alive and is never freed early. The one cost is that a
  cycle through an untracked object is never collected, which is why only the objects above,
  which cannot be in one, are untracked. Nothing else changes: an untracked entry is read,
  mutated (soft purge) and freed as before.
- :func:`settle` collects once and freezes what is alive (``gc.freeze``): the modules,
  classes and configuration of a process that has just started, and the stores' index
  containers (``long_lived()`` of each store). Full collections then walk only what came
  after. An empty dict is not tracked, so a freeze would miss a store's index while it is
  empty; with its first entry it would join the collector's generations, and every full
  collection would walk its 100,000 references (40-60 ms, one cache miss each). ``settle``
  makes each such container tracked first (one insert and delete of a private key), so it is
  frozen with the rest. Called by the edge's process entry (edge/main.py) after start-up and
  after each reload (unfreezing first, so what the reload replaced is collected, not kept
  frozen); never by code that runs inside another program (tests start edges in-process).
- Where ``ctypes.pythonapi`` is missing (not CPython), :func:`untrack` does nothing.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

__all__ = ["settle", "track", "untrack", "untracking"]


def _gc_untrack() -> Callable[[object], None] | None:
    try:
        function = ctypes.pythonapi.PyObject_GC_UnTrack
    except (AttributeError, OSError):  # pragma: no cover - not CPython
        return None
    function.argtypes = [ctypes.py_object]
    function.restype = None
    return function  # type: ignore[no-any-return]


_UNTRACK = _gc_untrack()


def untracking() -> bool:
    """Whether :func:`untrack` takes objects out of the collector's sight here."""
    return _UNTRACK is not None


def untrack(*objects: object) -> None:
    """Take these objects (each in no reference cycle, ever) out of the collector's sight.
    Objects the collector does not track (str, bytes, None...) are left as they are."""
    if _UNTRACK is None:
        return
    for obj in objects:
        if gc.is_tracked(obj):
            _UNTRACK(obj)


def settle(*long_lived: object) -> None:
    """Collect once, then freeze what is alive out of the full collections' sight, the
    ``long_lived`` containers (empty or not) included."""
    gc.unfreeze()
    gc.collect()
    for container in long_lived:
        track(container)
    gc.freeze()


def track(container: object) -> None:
    """Make an untracked dict tracked (a tracked value in and out): dicts are the one
    container CPython leaves untracked while it holds no tracked object."""
    if isinstance(container, dict) and not gc.is_tracked(container):
        key = object()  # no other key is this one
        container[key] = []
        del container[key]
