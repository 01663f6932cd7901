"""Run ``geoedge`` with ``gc.freeze()`` every few seconds (bench/edge_scale.sh, SCALE_GC_FREEZE=1).

A measurement aid, not a fix: it shows what CPython's full (generation 2) collections cost
the edge's latency when the caches hold ~100,000 entries (a full collection then walks every
stored Entry, StoredMeta and disk index record: ~0.3-0.7 s on this machine). ``gc.freeze()``
moves every object alive at that moment out of the collector's generations, so later
collections walk only newer objects; objects frozen and later left in a reference cycle are
never collected, which is why this is not the edge's default.

    python bench/edge/scale_gcfreeze.py <path to the geoedge script> edge --config ...
"""

from __future__ import annotations

import gc
import runpy
import sys
import threading

INTERVAL = 5.0


def _freezer(stop: threading.Event) -> None:
    while not stop.wait(INTERVAL):
        gc.freeze()


def main() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    stop = threading.Event()
    threading.Thread(target=_freezer, args=(stop,), name="gc-freeze", daemon=True).start()
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        stop.set()


if __name__ == "__main__":
    main()
