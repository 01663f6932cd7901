"""Disk hits off the event loop (edge/disk/tiered.py ``from_disk``), through a real edge.

A real ``geoedge`` edge with ``disk_path`` in front of a real origin; the object under test is
dropped from the memory store so that only the disk holds it, and the disk store's ``read``
(which runs in a reader thread) is held by a ``threading.Event``: while it waits, the edge must
go on answering memory hits; concurrent requests for the held object must share one read; a
purge that comes in while the file is read must win.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.disk import fileformat
from edge.disk.tiered import TieredStore
from edge.main import start_edge
from geoconfig.topology import parse_topology
from tests.edgeutil import DEFAULT_EDGE, WAIT, FakeClock, TestOrigin, topology_dict

HOST = "www.example.test"


class HeldReads:
    """Wraps ``DiskStore.read``: each call says it started, then waits for ``release``. The
    page-cache read on the loop is turned off (as when the page cache lacks the file)."""

    def __init__(self, store: TieredStore) -> None:
        self.inner = store.disk.read
        store.disk.read_cached = lambda k, meta: False  # type: ignore[method-assign]
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        store.disk.read = self.read  # type: ignore[method-assign]
        self.lookups = 0  # requests that reached the disk look-up
        self.looked_up = asyncio.Condition()
        inner_lookup = store.from_disk

        async def from_disk(*args: Any) -> Any:
            async with self.looked_up:
                self.lookups += 1
                self.looked_up.notify_all()
            return await inner_lookup(*args)
        store.from_disk = from_disk  # type: ignore[method-assign]

    def read(self, *args: Any) -> Any:
        self.calls += 1
        self.started.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the read")
        return self.inner(*args)

    async def wait_started(self) -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.started.wait, WAIT)

    async def wait_lookups(self, n: int) -> None:
        async with asyncio.timeout(WAIT), self.looked_up:
            await self.looked_up.wait_for(lambda: self.lookups >= n)


async def get(port: int, path: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as s, asyncio.timeout(WAIT), s.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": HOST}) as r:
        return r.status, await r.read(), r.headers.get("Cache-Status", "")


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[Any, TestOrigin]]:
    clock = FakeClock()
    origin = TestOrigin("origin-1", clock)
    await origin.start()
    for name in ("cold", "warm"):
        origin.route(f"/{name}", headers=[("Cache-Control", "max-age=3600")],
                     body=name.encode() * 500)
    topology = parse_topology(topology_dict([origin], {**DEFAULT_EDGE,
                                                       "disk_path": str(tmp_path)}))
    running = await start_edge(topology, "us-east-1", listen=("127.0.0.1", 0), clock=clock)
    try:
        for name in ("cold", "warm"):
            assert (await get(running.port, f"/{name}"))[0] == 200
        store = running.app.store
        assert isinstance(store, TieredStore)
        store.disk.flush(WAIT)
        store.memory.remove(f"http://{HOST}/cold")  # now on disk only
        yield running, origin
    finally:
        await running.stop()
        await origin.stop()


async def test_a_memory_hit_is_served_while_a_disk_read_is_held(edge: Any) -> None:
    running, origin = edge
    held = HeldReads(running.app.store)
    try:
        cold = asyncio.create_task(get(running.port, "/cold"))
        await held.wait_started()
        status, body, cache_status = await get(running.port, "/warm")  # the loop is free
        assert (status, body) == (200, b"warm" * 500) and "hit" in cache_status
        assert not cold.done()
    finally:
        held.release.set()
    status, body, cache_status = await cold
    assert (status, body) == (200, b"cold" * 500) and "hit" in cache_status
    assert origin.count("/cold") == 1  # served from disk, not fetched again
    # promoted into memory: the next hit reads nothing
    assert (await get(running.port, "/cold"))[1] == b"cold" * 500
    assert held.calls == 1


async def test_concurrent_requests_for_one_file_share_one_read(edge: Any) -> None:
    running, origin = edge
    held = HeldReads(running.app.store)
    try:
        first = asyncio.create_task(get(running.port, "/cold"))
        await held.wait_started()
        others = [asyncio.create_task(get(running.port, "/cold")) for _ in range(4)]
        await held.wait_lookups(5)  # all five wait for the disk while the first read is held
    finally:
        held.release.set()
    results = await asyncio.gather(first, *others)
    assert all(r[:2] == (200, b"cold" * 500) for r in results)
    assert held.calls == 1 and origin.count("/cold") == 1


async def test_a_purge_during_the_read_wins(edge: Any) -> None:
    running, origin = edge
    held = HeldReads(running.app.store)
    try:
        cold = asyncio.create_task(get(running.port, "/cold"))
        await held.wait_started()
        running.app.store.purge_key(f"http://{HOST}/cold")
    finally:
        held.release.set()
    status, body, cache_status = await cold
    assert (status, body) == (200, b"cold" * 500) and "fwd=" in cache_status
    assert origin.count("/cold") == 2  # what was read after the purge was not served


def _evict_from_page_cache(store: TieredStore, key: str) -> None:
    """Drop a stored file's pages from the page cache (written back first: only clean pages
    can be dropped), as after a restart or memory pressure."""
    path = fileformat.object_path(store.disk.root, key, "")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class CountedReads:
    """Counts the reads done in the reader threads (``DiskStore.read``)."""

    def __init__(self, store: TieredStore) -> None:
        self.inner, self.calls = store.disk.read, 0
        store.disk.read = self.read  # type: ignore[method-assign]

    def read(self, *args: Any) -> Any:
        self.calls += 1
        return self.inner(*args)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no RWF_NOWAIT on this platform")
async def test_a_small_file_in_the_page_cache_is_read_on_the_loop(edge: Any) -> None:
    running, origin = edge
    store = running.app.store
    threads = CountedReads(store)
    status, body, cache_status = await get(running.port, "/cold")
    assert (status, body) == (200, b"cold" * 500) and "hit" in cache_status
    assert (store.disk.stats.cached_reads, threads.calls) == (1, 0)
    assert origin.count("/cold") == 1


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no RWF_NOWAIT on this platform")
async def test_a_file_the_page_cache_lacks_is_read_in_a_thread(edge: Any) -> None:
    running, origin = edge
    store = running.app.store
    _evict_from_page_cache(store, f"http://{HOST}/cold")
    threads = CountedReads(store)
    status, body, cache_status = await get(running.port, "/cold")
    assert (status, body) == (200, b"cold" * 500) and "hit" in cache_status
    assert (store.disk.stats.cached_reads, threads.calls) == (0, 1)
    assert origin.count("/cold") == 1


async def test_a_damaged_file_read_on_the_loop_is_deleted_and_fetched_again(edge: Any) -> None:
    running, origin = edge
    store = running.app.store
    path = fileformat.object_path(store.disk.root, f"http://{HOST}/cold", "")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the body's last byte: the checksum no longer matches
    path.write_bytes(bytes(data))
    status, body, cache_status = await get(running.port, "/cold")
    assert (status, body) == (200, b"cold" * 500) and "fwd=" in cache_status
    assert store.disk.stats.corrupt == 1 and origin.count("/cold") == 2
    if hasattr(os, "RWF_NOWAIT"):
        assert store.disk.stats.cached_reads == 1  # it was the loop's read that found it
