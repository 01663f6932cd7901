"""What the stores keep out of the garbage collector's walk (edge/heap.py) and the expiry
queue a sweep reads (edge/expiry.py)."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from edge import heap
from edge.disk.store import DiskStore
from edge.disk.tiered import builder_id, rebuilder
from edge.expiry import SLACK, ExpiryQueue
from edge.policy.freshness import StoredMeta
from edge.proxy import EdgeApp
from edge.store import SWEEP_LIMIT, MemoryStore
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings
from tests.edgeutil import WAIT

NOW = 1_750_000_000.0
APP = EdgeApp("us-east-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: NOW)
needs_untrack = pytest.mark.skipif(not heap.untracking(), reason="not CPython: no untracking")


def entry(path: str, max_age: int = 3600, tags: frozenset[str] = frozenset(), body=None):
    meta = StoredMeta(200, (("Cache-Control", f"max-age={max_age}"),), NOW, NOW)
    return APP.make_entry(f"http://h.test{path}", meta, body or b"x" * 100, tags)


# -- the expiry queue, pure --------------------------------------------------------------------
@pytest.mark.parametrize(("items", "now", "limit", "due", "left"), [
    ([], NOW, 10, [], 0),
    ([(NOW + 1, "/a")], NOW, 10, [], 1),  # not yet
    ([(NOW, "/a")], NOW, 10, ["/a"], 0),  # due at its very time
    ([(NOW + 3, "/c"), (NOW - 5, "/a"), (NOW, "/b")], NOW, 10, ["/a", "/b"], 1),  # earliest 1st
    ([(NOW - i, f"/{i}") for i in range(5)], NOW, 2, ["/4", "/3"], 3),  # at most limit
])
def test_due(items, now, limit, due, left) -> None:
    q = ExpiryQueue()
    for when, key in items:
        q.add(when, (key, ""), live=len(items))
    assert q.due(now, limit) == [(k, "") for k in due]
    assert len(q) == left


def test_add_asks_for_a_rebuild_past_twice_the_live_entries() -> None:
    q = ExpiryQueue()
    asks = [q.add(NOW, (f"/{i}", ""), live=10) for i in range(2 * 10 + SLACK + 1)]
    assert asks == [False] * (2 * 10 + SLACK) + [True]
    q.rebuild([(NOW + 1, ("/live", "v"))])
    assert len(q) == 1 and q.due(NOW + 1, 10) == [("/live", "v")]


# -- sweeps look only at what is due -----------------------------------------------------------
def test_a_sweep_reads_only_the_due_keys_and_skips_what_was_replaced() -> None:
    store = MemoryStore(1 << 24)
    short = entry("/s", max_age=10)
    store.put(short, NOW)
    replaced = entry("/s", max_age=3600)  # the same key, stored again for longer
    store.put(replaced, NOW)
    for i in range(100):
        store.put(entry(f"/long/{i}"), NOW)
    assert store.sweep(short.keep_until) == 0  # the due item is stale: /s lives on
    assert store.get(short.key, (), NOW) is replaced
    assert store.sweep(replaced.keep_until) == 101


def test_a_sweep_stops_at_its_limit_and_the_next_one_goes_on() -> None:
    store = MemoryStore(1 << 26)
    for i in range(SWEEP_LIMIT + 10):
        store.put(entry(f"/{i}", max_age=10), NOW)
    later = NOW + 10_000
    assert store.sweep(later) == SWEEP_LIMIT
    assert store.sweep(later) == 10 and len(store) == 0


def test_the_queue_stays_within_twice_the_live_entries() -> None:
    store = MemoryStore(1 << 24)
    for round_ in range(20):
        for i in range(50):
            store.put(entry(f"/{i}", max_age=100 + round_), NOW)  # replaced 20 times
    assert len(store) == 50 and len(store._expiry) <= 2 * 50 + SLACK + 1


def test_a_disk_sweep_reads_only_the_due_keys(tmp_path: Path) -> None:
    builder = builder_id(APP.via, APP.policy, APP.settings.compression)
    disk = DiskStore(tmp_path, 1 << 30, rebuilder(APP.make_entry, builder), builder)
    disk.start()
    try:
        assert disk.wait_loaded(WAIT)
        short = entry("/s", max_age=10)
        disk.put(short, NOW)
        disk.put(entry("/s", max_age=3600), NOW)  # replaced: its old item is stale
        disk.put(entry("/t", max_age=10), NOW)
        disk.flush(WAIT)
        assert disk.sweep(short.keep_until) == 1  # /t only
        assert disk.get(short.key, (), NOW) is not None
    finally:
        disk.stop()


# -- untracked entries ---------------------------------------------------------------------------
@needs_untrack
def test_stored_entries_are_out_of_the_collectors_walk() -> None:
    store = MemoryStore(1 << 26)
    gc.collect()
    before = len(gc.get_objects())
    entries = [entry(f"/{i}", tags=frozenset({f"t{i}"})) for i in range(2000)]
    for e in entries:
        assert store.put(e, NOW)
    del e
    gc.collect()
    # what is left tracked per entry: the tag index's set, nothing of the entry itself
    assert len(gc.get_objects()) - before < 1.1 * len(entries)
    sample = entries[7]
    assert not any(gc.is_tracked(o) for o in (sample, sample.meta, sample.surrogate_keys))


@needs_untrack
def test_an_untracked_entry_is_still_freed_when_it_leaves_the_store() -> None:
    body = b"unique body %d" % id(object())
    store = MemoryStore(1 << 20)
    store.put(entry("/a", body=body), NOW)
    held = sys.getrefcount(body)
    assert store.purge_key("http://h.test/a") == 1
    assert sys.getrefcount(body) < held  # the entry (and its reference to the body) is gone


def test_settle_freezes_a_stores_empty_indexes() -> None:
    store = MemoryStore(1 << 20)
    containers = store.long_lived()
    assert any(not gc.is_tracked(c) for c in containers)  # empty dicts: untracked
    try:
        heap.settle(*containers)
        assert all(gc.is_tracked(c) for c in containers)
        tracked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
        assert not any(id(c) in tracked for c in containers)
        store.put(entry("/a"), NOW)  # filling them does not bring them back
        gc.collect()
        assert not any(id(c) in {id(o) for o in gc.get_objects()} for c in containers)
    finally:
        gc.unfreeze()  # this test process goes on with its usual collector
