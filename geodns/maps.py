"""The engine's region maps: the full-order one, and the one merged for the current health.

Rules:
- ``full`` (from geodata.mapcache: cached on disk) never changes for an engine: every entry's
  order is the order of every address in it, so with any health state "the first healthy region
  of the order" is the right answer and the entry's prefix a scope that is never too wide.
- ``active`` is ``full`` merged by what the answer depends on in one health state: for each
  distinct set of regions a geo name allows, the region chosen and whether it failed open. For
  the all-up state it is built at once (start-up); after a health change ``active`` is ``full``
  again at once, and the merge for the new state runs in a background thread and is swapped in
  when it is done, unless the health changed again meanwhile. Answers never wait for it. One
  merge thread at a time, always for the newest state (a burst of changes does not start a
  merge per change).
- ``loaded`` memoizes maps per process by the database file's identity and the regions, so
  engines built for the same files (a reload of an unchanged database, tests) share one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from geodata.mapcache import load_or_compile
from geodata.regionmap import RegionMap
from geodata.regions import Region

_LOADED: dict[tuple, RegionMap] = {}
_LOCK = threading.Lock()

Key = Callable[[int], object]


def loaded(db_path: str | Path, regions: Sequence[Region], default: str,
           cache_dir: str) -> RegionMap:
    st = os.stat(db_path)
    ident = (str(db_path), st.st_mtime_ns, st.st_size, st.st_ino, tuple(regions), default)
    with _LOCK:
        hit = _LOADED.get(ident)
    if hit is None:
        hit = load_or_compile(db_path, regions, default, cache_dir or None)
        with _LOCK:
            if len(_LOADED) >= 8:
                _LOADED.clear()
            _LOADED[ident] = hit
    return hit


class MapState:
    def __init__(self, full: RegionMap, all_up: Key, eager: bool = True) -> None:
        """``eager``: merge for all-up now; else serve ``full`` and merge in the background
        (the engine's further maps, one per distinct steering selection)."""
        self.full = full
        self.active = full.merged(all_up) if eager else full
        self._generation = 0
        self._pending: tuple[int, Key] | None = None  # the latest state still to merge
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.ready = threading.Event()  # set when ``active`` is merged for the current health
        self.ready.set()
        if not eager:
            self.health_changed(all_up)

    def health_changed(self, key: Key) -> None:
        """Serve ``full`` now; merge for ``key`` in the background. One merge runs at a time
        and only the newest state is merged: a burst of health changes costs one or two
        merges, not one each (each is seconds of CPU that the event loop's health probes
        share the interpreter with)."""
        with self._lock:
            self._generation += 1
            self._pending = (self._generation, key)
            self.ready.clear()
            self.active = self.full
            if self._worker is not None and self._worker.is_alive():
                return  # it takes the pending state when it finishes its current merge
            self._worker = threading.Thread(target=self._merge_pending, daemon=True,
                                            name="dns-map-merge")
            self._worker.start()

    def _merge_pending(self) -> None:
        while True:
            with self._lock:
                pending, self._pending = self._pending, None
                if pending is None:
                    self._worker = None
                    return
            generation, key = pending
            merged = self.full.merged(key)
            with self._lock:
                if generation == self._generation:
                    self.active = merged
                    self.ready.set()
