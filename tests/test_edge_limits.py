"""Resource limits (#11 item 5): slow bodies, sizes, connection caps, pipelining, origin caps.

Real sockets throughout; "another client" is a socket bound to 127.0.0.2 (loopback accepts any
127.x source). Waits are bounded polls or events; the only sleeps are a trickling client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import pytest
from edgeutil import DEMO, WAIT, edge_env, read_response

from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError

__all__ = ["edge_env"]


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n".encode()


async def connect(env, source: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", env.edge.port, local_addr=(source, 0))


async def until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def healthz(env, source: str) -> int:
    reader, writer = await connect(env, source)
    try:
        writer.write(get("/healthz", "Connection: close\r\n"))
        async with asyncio.timeout(WAIT):
            return (await read_response(reader))[0]
    finally:
        await close(writer)


# -- slow and large requests ----------------------------------------------------------------------
async def drip(env, chunk: bytes, pace: float) -> bytes:
    """POST a 1 MB body as ``chunk`` every ``pace`` seconds (wall time is the subject) until
    the edge answers; what it answered."""
    reader, writer = await connect(env)
    writer.write(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    data = b""
    try:
        async with asyncio.timeout(WAIT):
            while not data and not reader.at_eof():
                with contextlib.suppress(ConnectionError):
                    writer.write(chunk)
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pace):
                        data = await reader.read(65536)
    finally:
        await close(writer)
    return data


async def test_dripping_body_is_cut_by_the_minimum_rate(edge_env):
    """One byte every 0.1 s never pauses long enough for the pause timeout, but is far
    below the minimum rate: 408 once the grace period has been used up."""
    env = await edge_env(client_body_timeout=0.3, client_body_min_rate=100.0)
    env.origin.route("/post", echo=True)
    data = await drip(env, b"b", 0.1)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert env.origin.count() == 0


async def test_whole_request_deadline(edge_env):
    """Fast enough for the rate, but the whole request must arrive in client_request_timeout."""
    env = await edge_env(client_request_timeout=0.5, client_body_min_rate=0.0)
    env.origin.route("/post", echo=True)
    data = await drip(env, b"b" * 100, 0.05)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert env.origin.count() == 0


@pytest.mark.parametrize(("settings", "request_bytes", "status"), [
    # Host, the X-s and Connection: close
    ({"max_header_count": 5}, get("/a", "".join(f"X-{i}: v\r\n" for i in range(4))), 431),
    ({"max_header_count": 5}, get("/a", "".join(f"X-{i}: v\r\n" for i in range(3))), 404),
    ({"max_url_bytes": 64}, get("/" + "a" * 64), 414),
    ({"max_url_bytes": 64}, get("/" + "a" * 62), 404),
])
async def test_header_count_and_url_length(edge_env, settings, request_bytes, status):
    env = await edge_env(**settings)
    raw = await env.raw(request_bytes.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert raw.startswith(f"HTTP/1.1 {status} ".encode())
    assert env.origin.count() == (1 if status == 404 else 0)


async def test_keepalive_requests(edge_env):
    env = await edge_env(keepalive_requests=2)
    reader, writer = await connect(env)
    writer.write(get("/healthz") + get("/healthz") + get("/healthz"))
    async with asyncio.timeout(WAIT):
        first = await read_response(reader)
        second = await read_response(reader)
        rest = await reader.read(-1)
    await close(writer)
    assert first[0] == second[0] == 200
    assert "Connection" not in first[1] and second[1]["Connection"] == "close"
    assert rest == b""  # the third request is never answered: the connection closed


# -- connection caps ------------------------------------------------------------------------------
async def test_per_address_cap_answers_503_and_spares_others(edge_env, caplog):
    env = await edge_env(max_connections_per_address=5)
    held = [await connect(env, "127.0.0.2") for _ in range(5)]
    await until(lambda: env.edge.limiter.by_address.get("127.0.0.2") == 5)
    caplog.set_level(logging.WARNING, "geoedge.edge.limits")
    for _ in range(3):
        reader, writer = await connect(env, "127.0.0.2")
        async with asyncio.timeout(WAIT):
            refused = await reader.read(-1)
        await close(writer)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in refused
    lines = [r for r in caplog.records if r.name == "geoedge.edge.limits"]
    assert len(lines) == 1 and "127.0.0.2" in lines[0].getMessage()  # rate-limited
    assert await healthz(env, "127.0.0.1") == 200  # another client is not affected
    await close(held.pop()[1])
    await until(lambda: env.edge.limiter.by_address.get("127.0.0.2") == 4)
    assert await healthz(env, "127.0.0.2") == 200  # a slot freed is a slot usable
    for _, writer in held:
        await close(writer)
    await until(lambda: env.edge.limiter.total == 0)


async def test_per_edge_cap_closes_at_once_and_exempts_the_prober(edge_env, caplog):
    env = await edge_env(max_connections=3, connection_limit_exempt=["127.0.0.3/32"])
    held = [await connect(env, "127.0.0.2") for _ in range(3)]
    await until(lambda: env.edge.limiter.total == 3)
    caplog.set_level(logging.WARNING, "geoedge.edge.limits")
    reader, writer = await connect(env, "127.0.0.1")
    async with asyncio.timeout(WAIT):
        assert await reader.read(-1) == b""  # closed, unanswered (nginx worker_connections)
    await close(writer)
    assert any("edge.max_connections" in r.getMessage() for r in caplog.records)
    assert await healthz(env, "127.0.0.3") == 200  # the GeoDNS prober's address
    for _, w in held:
        await close(w)
    await until(lambda: env.edge.limiter.total == 0)
    assert await healthz(env, "127.0.0.1") == 200


# -- pipelining -----------------------------------------------------------------------------------
async def test_pipelined_bodies_are_bounded_per_connection(edge_env):
    """A slow first request, then 8 MiB of pipelined POSTs: the edge stops reading at about
    max_buffered_bytes, and answers all of them once the first is done."""
    env = await edge_env(max_buffered_bytes=64 * 1024)
    gate = asyncio.Event()
    env.origin.route("/slow", gate=gate)
    env.origin.route("/post", body=b"posted")
    body = b"p" * (32 * 1024)
    post = b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    reader, writer = await connect(env)
    writer.write(get("/slow"))
    await env.origin.wait_count("/slow", 1)
    sender = asyncio.create_task(_send(writer, post * 256))
    proto = next(p for p in env.edge.connections if p.busy)
    await until(lambda: proto.transport is not None and not proto.transport.is_reading())
    held = proto._queued_bytes + proto._body_bytes
    assert held <= 64 * 1024 + 512 * 1024  # the bound plus at most one read of the socket
    assert not sender.done()  # the rest waits in the client, not in the edge
    gate.set()
    async with asyncio.timeout(WAIT * 4):
        statuses = [(await read_response(reader))[0] for _ in range(257)]
        await sender
    await close(writer)
    assert statuses == [200] * 257


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


# -- origin connection cap ------------------------------------------------------------------------
async def test_origin_connections_are_capped_and_queued(edge_env):
    env = await edge_env(origin_max_conns=2)
    gate = asyncio.Event()
    for i in range(6):
        env.origin.route(f"/m{i}", gate=gate)
    tasks = [asyncio.create_task(env.get(f"/m{i}")) for i in range(6)]
    await until(lambda: env.app.pool.queued["origin-1"] == 4)
    await until(lambda: env.origin.in_flight == 2)  # the two sent may not have arrived yet
    gate.set()
    assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 6
    assert env.origin.max_in_flight == 2
    await until(lambda: env.app.pool.snapshot()[0]["active"] == 0)


async def test_origin_queue_timeout_is_502_and_not_a_failure(edge_env):
    env = await edge_env(origin_max_conns=1, origin_queue_timeout=0.2)
    gate = asyncio.Event()
    env.origin.route("/held", gate=gate)
    held = asyncio.create_task(env.get("/held"))
    await env.origin.wait_count("/held", 1)
    r = await env.get("/other")
    assert r.status == 502
    gate.set()
    assert (await held).status == 200
    row = env.app.pool.snapshot()[0]
    assert row["up"] and not row["ejected"] and row["fails"] == 0
    await until(lambda: env.app.pool.snapshot()[0]["active"] == 0)
    assert env.app.pool.queued["origin-1"] == 0


# -- configuration --------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [
    ("max_connections", 0), ("max_connections_per_address", -1), ("origin_max_conns", -1),
    ("client_body_timeout", 0), ("client_body_min_rate", -1.0), ("max_url_bytes", 1),
    ("connection_limit_exempt", ["not-a-net"]), ("admin_listen", "nowhere"),
    ("keepalive_requests", "many"),
])
def test_limit_keys_are_validated(key, value):
    import tomllib
    with DEMO.open("rb") as f:
        doc = tomllib.load(f)
    doc["edge"] = {**doc["edge"], key: value}
    with pytest.raises(ConfigError) as info:
        parse_topology(doc)
    assert f"edge.{key}" in str(info.value)
