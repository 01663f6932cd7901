"""The on-disk store (edge/disk/): file format, LRU bound, purges, restarts, corruption.

The unit tests drive ``DiskStore`` with entries built by a real ``EdgeApp.make_entry``; the
end-to-end tests restart a real edge on the same ``disk_path`` in front of a real origin and
count what reaches the origin.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from edge.disk import fileformat
from edge.disk.store import DiskStore
from edge.disk.tiered import builder_id, rebuilder
from edge.main import start_edge
from edge.policy.freshness import StoredMeta
from edge.policy.vary import vary_key
from edge.proxy import EdgeApp
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings
from geoconfig.topology import parse_topology
from tests.edgeutil import DEFAULT_EDGE, WAIT, FakeClock, TestOrigin, topology_dict

NOW = 1_750_000_000.0
HOST = "www.example.test"


def app() -> EdgeApp:
    return EdgeApp("us-east-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: NOW)


def builder() -> bytes:
    a = app()
    return builder_id(a.via, a.policy, a.settings.compression)


def entry(path: str = "/a", body: bytes = b"hello", max_age: int = 3600,
          extra: tuple[tuple[str, str], ...] = (), tags: frozenset[str] = frozenset()):
    meta = StoredMeta(200, (("Cache-Control", f"max-age={max_age}"), ("Content-Length",
                                                                       str(len(body))), *extra),
                      NOW, NOW)
    return app().make_entry(f"http://{HOST}{path}", meta, body, tags)


def store(root: Path, max_bytes: int = 1 << 30) -> DiskStore:
    return DiskStore(root, max_bytes, rebuilder(app().make_entry, builder()), builder())


def started(root: Path, max_bytes: int = 1 << 30) -> DiskStore:
    s = store(root, max_bytes)
    s.start()
    assert s.wait_loaded(WAIT)
    return s


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.obj"))


# -- the file format ------------------------------------------------------------------------------
def test_pack_round_trip_and_every_truncation_and_flip_is_refused() -> None:
    data = fileformat.encode(entry(body=b"x" * 300), builder())
    assert fileformat.decode(data).body == b"x" * 300
    for n in range(len(data)):
        with pytest.raises(ValueError):
            fileformat.decode(data[:n])
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(ValueError):
            fileformat.decode(bytes(flipped))


@pytest.mark.parametrize(("cut", "why"), [
    (0, "empty"), (10, "inside the magic and digest"), (30, "inside the JSON"),
    (-1, "one body byte short"),
])
def test_peek_refuses_a_short_file(cut: int, why: str) -> None:
    data = fileformat.encode(entry(body=b"y" * 100), builder())
    short = data[:cut]
    with pytest.raises(ValueError):
        fileformat.peek(short, len(short))


def test_peek_reads_the_index_fields_without_the_body() -> None:
    e = entry(body=b"z" * 50, tags=frozenset({"t1"}))
    data = fileformat.encode(e, builder())
    need = fileformat.head_bytes_needed(data[:fileformat.PREFIX_BYTES])
    peeked = fileformat.peek(data[:need], len(data))
    assert (peeked.key, peeked.variant, peeked.tags, peeked.size) == (
        e.key, e.variant, frozenset({"t1"}), len(data))
    assert need < len(data) - 40  # the body is not needed


# -- the store ------------------------------------------------------------------------------------
def test_survives_a_restart_with_age_and_body(tmp_path: Path) -> None:
    s = started(tmp_path)
    e = entry(body=b"kept")
    assert s.put(e, NOW)
    s.stop()
    again = started(tmp_path)
    found = again.get(e.key, (), NOW + 10)
    assert found is not None
    assert (found.body, found.soft_purged, found.meta.response_time) == (b"kept", False, NOW)
    assert (found.head, found.lifetime, found.size) == (e.head, e.lifetime, e.size)
    assert again.stats.loaded_files == 1
    again.stop()


def test_a_key_is_served_before_the_loader_reaches_it(tmp_path: Path) -> None:
    s = started(tmp_path)
    e = entry()
    s.put(e, NOW)
    s.stop()
    lazy = store(tmp_path)  # not started: no loader ran, the index is empty
    found = lazy.get(e.key, (), NOW)
    assert found is not None and found.body == b"hello"
    assert not lazy.stats.loaded


def test_lru_bound_in_bytes(tmp_path: Path) -> None:
    limit = 64 * 1024
    s = started(tmp_path, limit)
    for i in range(40):
        s.put(entry(f"/o{i}", body=bytes(4096)), NOW)
        s.flush(WAIT)
        assert s.size_bytes <= limit
    total = sum(p.stat().st_size for p in files(tmp_path))
    assert total <= limit
    assert s.get(entry("/o39").key, (), NOW) is not None  # the newest stay
    assert s.get(entry("/o0").key, (), NOW) is None  # the oldest went
    assert s.stats.evictions > 0
    s.stop()


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_damaged_file_is_deleted_and_never_served(tmp_path: Path, damage: str) -> None:
    s = started(tmp_path)
    e = entry(body=b"B" * 1000)
    s.put(e, NOW)
    s.stop()
    [path] = files(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        del data[-100:]
    else:
        data[:] = os.urandom(len(data))
    path.write_bytes(bytes(data))
    again = store(tmp_path)  # looked up before any loader: the read itself must catch it
    assert again.get(e.key, (), NOW) is None
    if damage == "flip":  # the header is intact: caught by the checksum when read
        assert again.stats.corrupt == 1
    assert again.get(e.key, (), NOW) is None
    assert not path.exists() or damage == "flip"


def test_a_flipped_body_is_deleted_once_the_writer_runs(tmp_path: Path) -> None:
    s = started(tmp_path)
    e = entry(body=b"C" * 1000)
    s.put(e, NOW)
    s.stop()
    [path] = files(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    again = started(tmp_path)
    assert again.get(e.key, (), NOW) is None
    again.flush(WAIT)
    assert not path.exists() and again.stats.corrupt == 1
    again.stop()


def test_stray_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "half-written").write_bytes(b"GD1\npartial")
    s = started(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
    s.stop()


@pytest.mark.parametrize(("kind", "value"), [
    ("key", f"http://{HOST}/p/1"), ("prefix", f"http://{HOST}/p/"), ("tag", "group"),
])
@pytest.mark.parametrize("soft", [False, True])
def test_purges_hold_across_a_restart(tmp_path: Path, kind: str, value: str, soft: bool) -> None:
    s = started(tmp_path)
    purged = entry("/p/1", tags=frozenset({"group"}))
    kept = entry("/q/1")
    s.put(purged, NOW)
    s.put(kept, NOW)
    {"key": s.purge_key, "prefix": s.purge_prefix, "tag": s.purge_tag}[kind](value, soft)
    s.stop()
    again = started(tmp_path)
    found = again.get(purged.key, (), NOW)
    if soft:
        assert found is not None and found.soft_purged  # kept, but must be revalidated
    else:
        assert found is None
    assert again.get(kept.key, (), NOW) is not None
    again.stop()


def test_a_purge_asked_while_loading_applies_to_files_loaded_later(tmp_path: Path) -> None:
    s = started(tmp_path)
    s.put(entry("/p/1"), NOW)
    s.put(entry("/q/1"), NOW)
    s.stop()
    lazy = store(tmp_path)  # nothing indexed yet
    lazy.purge_prefix(f"http://{HOST}/p/")
    assert lazy.get(entry("/p/1").key, (), NOW) is None
    assert lazy.get(entry("/q/1").key, (), NOW) is not None


def test_expired_entries_are_not_served_and_swept(tmp_path: Path) -> None:
    s = started(tmp_path)
    e = entry(max_age=10)
    s.put(e, NOW)
    s.flush(WAIT)
    assert s.get(e.key, (), e.keep_until + 1) is None
    s.flush(WAIT)
    assert files(tmp_path) == []
    s.stop()


def test_vary_variants_are_kept_apart(tmp_path: Path) -> None:
    s = started(tmp_path)
    a = app()
    for lang in ("en", "fr"):
        variant = vary_key(("accept-language",), (("accept-language", lang),)) or ""
        meta = StoredMeta(200, (("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")),
                          NOW, NOW, "GET", variant)
        s.put(a.make_entry(f"http://{HOST}/v", meta, lang.encode(), frozenset()), NOW)
    s.stop()
    again = started(tmp_path)
    for lang in ("en", "fr"):
        found = again.get(f"http://{HOST}/v", (("accept-language", lang),), NOW)
        assert found is not None and found.body == lang.encode()
    assert again.get(f"http://{HOST}/v", (("accept-language", "de"),), NOW) is None
    again.stop()


# -- a real edge restarted on the same directory --------------------------------------------------
async def _edge(origin: TestOrigin, clock: FakeClock, disk: Path, **edge: object):
    topology = parse_topology(topology_dict([origin], {**DEFAULT_EDGE, "disk_path": str(disk),
                                                       **edge}))
    return await start_edge(topology, "us-east-1", listen=("127.0.0.1", 0), clock=clock)


async def _get(port: int, path: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as s, asyncio.timeout(WAIT), s.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": HOST}) as r:
        return r.status, await r.read(), r.headers.get("Cache-Status", "")


async def test_a_restarted_edge_serves_from_disk_without_the_origin(tmp_path: Path) -> None:
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    try:
        for i in range(20):
            origin.route(f"/o/{i}", headers=[("Cache-Control", "max-age=3600")],
                         body=f"object {i}".encode() * 100)
        first = await _edge(origin, clock, tmp_path)
        try:
            for i in range(20):
                assert (await _get(first.port, f"/o/{i}"))[0] == 200
        finally:
            await first.stop()
        fetched = origin.count()
        clock.advance(60)
        second = await _edge(origin, clock, tmp_path)
        try:
            for i in range(20):
                status, body, cache_status = await _get(second.port, f"/o/{i}")
                assert (status, body) == (200, f"object {i}".encode() * 100)
                assert "hit" in cache_status
            assert origin.count() == fetched  # not one fetch more
        finally:
            await second.stop()
    finally:
        await origin.stop()


async def test_a_corrupt_object_after_a_restart_is_refetched(tmp_path: Path) -> None:
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    try:
        origin.route("/c", headers=[("Cache-Control", "max-age=3600")], body=b"clean" * 200)
        first = await _edge(origin, clock, tmp_path)
        try:
            await _get(first.port, "/c")
        finally:
            await first.stop()
        [path] = files(tmp_path)
        data = bytearray(path.read_bytes())
        data[-5:] = b"EVIL!"
        path.write_bytes(bytes(data))
        second = await _edge(origin, clock, tmp_path)
        try:
            status, body, _ = await _get(second.port, "/c")
            assert (status, body) == (200, b"clean" * 200)
            assert origin.count("/c", "GET") == 2
        finally:
            await second.stop()
    finally:
        await origin.stop()


async def test_an_object_too_big_for_memory_is_cached_on_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    try:
        big = os.urandom(300_000)
        origin.route("/big", headers=[("Cache-Control", "max-age=3600")], body=big)
        edge = await _edge(origin, clock, tmp_path, cache_max_bytes=200_000,
                           max_object_bytes=1_000_000)
        try:
            assert (await _get(edge.port, "/big"))[:2] == (200, big)
            edge.app.store.disk.flush(WAIT)
            status, body, cache_status = await _get(edge.port, "/big")
            assert (status, body) == (200, big) and "hit" in cache_status
            assert origin.count("/big", "GET") == 1
        finally:
            await edge.stop()
    finally:
        await origin.stop()


async def test_an_unusable_disk_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    try:
        with pytest.raises(OSError, match=r"edge\.disk_path"):
            await _edge(origin, clock, blocker / "cache")
    finally:
        await origin.stop()


@pytest.mark.parametrize(("edge", "key"), [
    ({"disk_max_bytes": 10}, "edge.disk_max_bytes"),
    ({"disk_path": 5}, "edge.disk_path"),
    ({"disk_path": "", "max_object_bytes": 2 << 30, "cache_max_bytes": 1 << 30},
     "edge.max_object_bytes"),
])
def test_bad_disk_settings_name_the_key(edge: dict[str, object], key: str) -> None:
    from geoconfig.validate import ConfigError
    origin = TestOrigin("origin-1", FakeClock())
    origin.port = 1
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_topology(topology_dict([origin], {**DEFAULT_EDGE, **edge}))


def test_a_big_object_limit_fits_the_disk() -> None:
    origin = TestOrigin("origin-1", FakeClock())
    origin.port = 1
    topology = parse_topology(topology_dict([origin], {
        **DEFAULT_EDGE, "disk_path": "/tmp/x", "disk_max_bytes": 4 << 30,
        "max_object_bytes": 2 << 30, "cache_max_bytes": 1 << 30}))
    assert topology.cdn.edge.max_object_bytes == 2 << 30


def test_files_of_the_json_format_and_its_layout_are_deleted(tmp_path: Path) -> None:
    """Before GD2: ``GD1`` files (JSON) in a directory per key. Read as misses, removed."""
    s = started(tmp_path)
    e = entry("/old")
    s.put(e, NOW)
    s.stop()
    [path] = files(tmp_path)
    assert path.parent.parent == tmp_path  # <k[:2]>/<k>-<v>.obj: no directory per key
    path.write_bytes(b"GD1\n" + path.read_bytes()[4:])  # an old-format file where it is looked for
    old_dir = path.parent / path.name.partition("-")[0]  # the old layout's key directory
    old_dir.mkdir()
    (old_dir / "e3b0c44298fc1c149afbf4c8996fb924.obj").write_bytes(b"GD1\nold")
    lazy = store(tmp_path)
    assert lazy.get(e.key, (), NOW) is None and lazy.stats.corrupt == 1
    assert not path.exists()
    again = started(tmp_path)
    assert not old_dir.exists() and files(tmp_path) == []
    again.stop()
