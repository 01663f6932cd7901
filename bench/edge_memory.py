"""Memory per stored object against the configured bound (#11 item 8).

For each object size (1 B, 1 KiB, 64 KiB by default) a fresh ``MemoryStore`` bounded at
``--max-bytes`` is filled, through ``EdgeApp.make_entry`` exactly as the proxy stores a
response (realistic origin headers, one URL per object), with more objects than fit; then it
prints what the store counts, what Python really allocated for it (tracemalloc), and the
RSS growth of a process that did only that (each figure from a fresh interpreter). The bound
holds when the traced and RSS figures stay close to the counted one.

    .venv/bin/python bench/edge_memory.py [--max-bytes 67108864] [--count 120000]
    .venv/bin/python bench/edge_memory.py --max-bytes 1073741824 --count 100000 --sizes 0
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.policy.cachecontrol import _response_directives
from edge.policy.freshness import StoredMeta
from edge.proxy import EdgeApp
from edge.store import MemoryStore
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings

NOW = 1_750_000_000.0
HEADERS = 7  # origin header fields per object (--headers)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def headers(i: int, size: int) -> tuple[tuple[str, str], ...]:
    """What a typical origin sends (each string built afresh, as a parser does)."""
    raw = [(b"Date", b"Sun, 15 Jun 2025 15:06:40 GMT"),
           (b"Content-Type", b"application/octet-stream"),
           (b"Content-Length", str(size).encode()),
           (b"Cache-Control", b"public, max-age=3600"),
           (b"ETag", f'"{i:08x}-{size:x}"'.encode()),
           (b"Last-Modified", b"Sat, 14 Jun 2025 10:00:00 GMT"),
           (b"Server", b"origin/1.0")][:HEADERS]
    return tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in raw)


def size_of(i: int, size: int) -> int:
    """``size``, or for 0 a size drawn log-uniformly from 4 KiB to 1 MiB (the same each run)."""
    return size or int(4096 * 256 ** random.Random(i).random())


def fill(app: EdgeApp, store: MemoryStore, count: int, size: int) -> int:
    stored = 0
    fixed = size
    for i in range(count):
        size = size_of(i, fixed)
        meta = StoredMeta(200, headers(i, size), NOW, NOW)
        body = os.urandom(size) if size <= 64 else bytes(size - 8) + i.to_bytes(8, "big")
        entry = app.make_entry(f"http://www.example.test/objects/{i:07d}.bin", meta, body,
                               frozenset())
        stored += store.put(entry, NOW)
    return stored


def measure(max_bytes: int, count: int, size: int, trace: bool) -> dict[str, float]:
    """One fill in this process: tracemalloc's count, or (trace False) the RSS growth."""
    settings = EdgeSettings(cache_max_bytes=max_bytes, max_object_bytes=min(max_bytes, 1 << 24))
    app = EdgeApp("bench", settings, OriginPool((), settings), lambda: NOW)
    gc.collect()
    rss0 = rss()
    if trace:
        tracemalloc.start()
    store = MemoryStore(max_bytes)
    fill(app, store, count, size)
    # the policy's bounded memo of parsed Cache-Control (4096 header sets, a fixed cost of a
    # few MiB whatever the store holds) is not the store's
    _response_directives.cache_clear()
    gc.collect()
    real = tracemalloc.get_traced_memory()[0] if trace else rss() - rss0
    return {"objects": len(store), "counted": store.size_bytes, "real": real,
            "rss_peak": peak_rss()}


def child(max_bytes: int, count: int, size: int, trace: bool) -> dict[str, float]:
    """``measure`` in a fresh interpreter: RSS never shrinks, so each figure gets its own."""
    argv = [sys.executable, __file__, "--max-bytes", str(max_bytes), "--count", str(count),
            "--headers", str(HEADERS), "--one", str(size)] + (["--trace"] if trace else [])
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--count", type=int, default=120_000)
    parser.add_argument("--sizes", default="1,1024,65536",
                        help="object sizes in bytes; 0: mixed, 4 KiB to 1 MiB log-uniform")
    parser.add_argument("--headers", type=int, default=HEADERS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    globals()["HEADERS"] = args.headers
    if args.one is not None:
        print(json.dumps(measure(args.max_bytes, args.count, args.one, args.trace)))
        return
    mib = 1024 * 1024
    print(f"bound {args.max_bytes / mib:.1f} MiB, {args.count} objects offered per size, "
          f"{HEADERS} origin header fields each")
    print(f"{'object':>8} {'stored':>8} {'counted MiB':>12} {'traced MiB':>11} {'RSS MiB':>8} "
          f"{'counted/obj':>12} {'traced/obj':>11} {'RSS/bound':>10} {'RSS <= 1.3x+64MiB':>18} "
          f"{'peak RSS MiB':>13}")
    for size in (int(s) for s in args.sizes.split(",")):
        t = child(args.max_bytes, args.count, size, trace=True)
        r = child(args.max_bytes, args.count, size, trace=False)
        n = t["objects"]
        print(f"{size:>8} {n:>8} {t['counted'] / mib:>12.1f} {t['real'] / mib:>11.1f} "
              f"{r['real'] / mib:>8.1f} {t['counted'] / n:>12.0f} {t['real'] / n:>11.0f} "
              f"{r['real'] / args.max_bytes:>10.2f} "
              f"{'yes' if r['real'] <= 1.3 * r['counted'] + 64 * mib else 'NO':>18} "
              f"{r['rss_peak'] / mib:>13.1f}")

if __name__ == "__main__":
    main()
