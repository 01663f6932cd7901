"""Vary look-up time with 10 and 10,000 stored variants of one URL (prints figures).

    .venv/bin/python bench/vary_lookup.py [--lookups N]

The edge keeps, per URL, the distinct Vary field lists of what it stores, so a look-up
computes one variant key and makes one dictionary look-up whatever the number of variants.
This measures MemoryStore.get for a request naming a random stored variant (User-Agent), for
one that names none (a vary-miss), and for an unrelated URL, with 10 and 10,000 variants.
"""

from __future__ import annotations

import argparse
import random
import time

from edge.policy.freshness import StoredMeta
from edge.policy.vary import vary_key
from edge.store import Entry, MemoryStore

URL = "http://example.test/page"


def fill(variants: int) -> MemoryStore:
    store = MemoryStore(1 << 34, max_variants=variants)
    now = time.time()
    for i in range(variants):
        headers = (("User-Agent", f"agent-{i}"),)
        variant = vary_key(("User-Agent",), headers) or ""
        meta = StoredMeta(200, (("Vary", "User-Agent"),), now, now, "GET", variant)
        store.put(Entry(URL, variant, ("User-Agent",), meta, b"x", b"HTTP/1.1 200 OK\r\n",
                        60.0, 0.0, now + 3600), now)
    other = StoredMeta(200, (), now, now)
    store.put(Entry("http://example.test/other", "", (), other, b"y", b"", 60.0, 0.0,
                    now + 3600), now)
    assert store.variant_count(URL) == variants
    return store


def per_lookup(store: MemoryStore, url: str, agents: list[str]) -> float:
    now = time.time()
    start = time.perf_counter()
    for agent in agents:
        store.get(url, (("User-Agent", agent),), now)
    return (time.perf_counter() - start) / len(agents) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=50_000)
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"{'variants':>9} {'hit µs':>8} {'vary-miss µs':>13} {'other URL µs':>13}")
    results = {}
    for n in (10, 10_000):
        store = fill(n)
        hits = [f"agent-{rng.randrange(n)}" for _ in range(args.lookups)]
        misses = [f"new-agent-{i}" for i in range(args.lookups)]
        row = (per_lookup(store, URL, hits), per_lookup(store, URL, misses),
               per_lookup(store, "http://example.test/other", hits))
        results[n] = row
        print(f"{n:>9} {row[0]:>8.2f} {row[1]:>13.2f} {row[2]:>13.2f}")
    ratio = results[10_000][0] / results[10][0]
    print(f"hit time, 10,000 vs 10 variants: {ratio:.2f}x (goal: within 2x)")


if __name__ == "__main__":
    main()
