"""Sweeps drop what expired and nothing else, and leave the LRU order alone (edge/store.py,
edge/disk/store.py)."""

from __future__ import annotations

from pathlib import Path

from edge.disk.store import DiskStore
from edge.disk.tiered import builder_id, rebuilder
from edge.policy.freshness import StoredMeta
from edge.proxy import EdgeApp
from edge.store import MemoryStore
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings
from tests.edgeutil import WAIT

NOW = 1_750_000_000.0
APP = EdgeApp("us-east-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: NOW)


def entry(path: str, max_age: int = 3600):
    meta = StoredMeta(200, (("Cache-Control", f"max-age={max_age}"),), NOW, NOW)
    return APP.make_entry(f"http://h.test{path}", meta, b"x" * 1000, frozenset())


def test_a_sweep_keeps_the_lru_order() -> None:
    a, b, c = entry("/a"), entry("/b"), entry("/c")
    store = MemoryStore(a.size * 3)
    for e in (a, b, c):
        assert store.put(e, NOW)
    assert store.get(a.key, (), NOW) is a  # a is now the most recently used, b the least
    assert store.sweep(NOW) == 0
    assert store.put(entry("/d"), NOW)  # one must go: the least recently used
    assert store.get(b.key, (), NOW) is None
    assert store.get(a.key, (), NOW) is a and store.get(c.key, (), NOW) is c


def test_a_sweep_drops_exactly_the_expired() -> None:
    short, long = entry("/short", max_age=10), entry("/long")
    store = MemoryStore(1 << 20)
    store.put(short, NOW)
    store.put(long, NOW)
    assert store.sweep(short.keep_until) == 1
    assert store.get(short.key, (), NOW) is None and store.get(long.key, (), NOW) is long


def test_a_disk_sweep_drops_exactly_the_expired(tmp_path: Path) -> None:
    builder = builder_id(APP.via, APP.policy, APP.settings.compression)
    disk = DiskStore(tmp_path, 1 << 30, rebuilder(APP.make_entry, builder), builder)
    disk.start()
    assert disk.wait_loaded(WAIT)
    short, long = entry("/short", max_age=10), entry("/long")
    disk.put(short, NOW)
    disk.put(long, NOW)
    disk.flush(WAIT)
    assert disk.sweep(short.keep_until) == 1
    disk.flush(WAIT)
    assert len(disk) == 1 and disk.get(long.key, (), NOW) is not None
    assert len(list(tmp_path.rglob("*.obj"))) == 1
    disk.stop()
