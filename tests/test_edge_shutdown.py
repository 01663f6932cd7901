"""Stopping an edge (#12 item 11), on the real ``geoedge edge`` process: SIGTERM and SIGINT
stop accepting at once, let the requests in progress finish within ``edge.drain_timeout``,
then exit 0; an idle edge exits in well under half a second (a behaviour bound)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from edgeutil import DEFAULT_EDGE, EDGE_NAME, WAIT, FakeClock, TestOrigin, topology_dict

from geoedge.deploy.writers import dump_toml

IDLE_EXIT_BOUND = 0.5  # seconds from the signal to the exit of an edge with nothing to do


class EdgeProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []

    async def line(self, text: str) -> None:
        """Until the edge logs a line containing ``text`` (bounded)."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(WAIT):
            while not any(text in line for line in self.log):
                raw = await self.proc.stderr.readline()
                assert raw, f"edge exited before logging {text!r}: {self.log}"
                self.log.append(raw.decode(errors="replace"))

    async def wait(self) -> int:
        async with asyncio.timeout(WAIT):
            return await self.proc.wait()


@pytest.fixture
async def edge_process(tmp_path: Path) -> AsyncIterator:
    origin = TestOrigin("origin-1", FakeClock())
    await origin.start()
    started: list[EdgeProcess] = []

    async def make(**edge) -> tuple[EdgeProcess, TestOrigin]:
        data = topology_dict([origin], {**DEFAULT_EDGE, "admin_listen": None, **edge})
        config = tmp_path / "edge.toml"
        config.write_text(dump_toml(data))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geoedge.cli", "edge", "--config", str(config), "--name",
            EDGE_NAME, "--listen", "127.0.0.1:0", stderr=asyncio.subprocess.PIPE)
        edge = EdgeProcess(proc, 0)
        started.append(edge)
        await edge.line("serving edge")
        edge.port = int(next(ln for ln in edge.log if "serving edge" in ln)
                        .split(" port ")[1].split()[0])
        return edge, origin

    yield make
    for edge in started:
        if edge.proc.returncode is None:
            edge.proc.kill()
            await edge.proc.wait()
    await origin.stop()


async def request(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: www.example.test\r\n\r\n".encode())
    return reader, writer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_an_idle_edge_exits_at_once(edge_process, sig):
    edge, origin = await edge_process()
    origin.route("/a", body=b"a", headers=[("Cache-Control", "max-age=60")])
    reader, writer = await request(edge.port, "/a")  # an idle keep-alive connection stays
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    signalled = time.monotonic()
    edge.proc.send_signal(sig)
    assert await edge.wait() == 0
    assert time.monotonic() - signalled < IDLE_EXIT_BOUND
    writer.close()


async def test_in_flight_requests_finish_while_new_connections_are_refused(edge_process):
    edge, origin = await edge_process()
    gate = asyncio.Event()
    origin.route("/slow", body=b"done", gate=gate)
    reader, writer = await request(edge.port, "/slow")
    await origin.wait_count("/slow", 1)
    edge.proc.send_signal(signal.SIGTERM)
    await edge.line("stopped accepting: 1 requests in progress")  # logged after the close
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", edge.port)
    gate.set()
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.read()  # the edge closes after the response
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert body == b"done"
    assert await edge.wait() == 0
    writer.close()


async def test_drain_timeout_cuts_what_is_left(edge_process):
    edge, origin = await edge_process(drain_timeout=0.2)
    origin.route("/stuck", body=b"never", gate=asyncio.Event())
    reader, writer = await request(edge.port, "/stuck")
    await origin.wait_count("/stuck", 1)
    edge.proc.send_signal(signal.SIGTERM)
    assert await edge.wait() == 0
    with contextlib.suppress(ConnectionError):
        assert await reader.read() == b""  # cut without an answer
    await edge.line("drain timeout (0.2 s): cutting 1 connections")
    writer.close()
