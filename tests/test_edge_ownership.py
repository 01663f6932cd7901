"""Every upstream response is released on every path, and odd origin answers end in 502.

The origin pool's ``active`` count (what least_conn and ewma balance on) must return to 0
after each failure mode: an invalid status, a 304 nobody asked for, a client that leaves
mid-body, an origin that dies mid-body, a coalesced waiter whose client left.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web
from edgeutil import WAIT, edge_env, member, read_response

__all__ = ["edge_env"]


async def slots_back_to_zero(env) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while True:
        active = [row["active"] for row in env.app.pool.snapshot()]
        if not any(active):
            return
        assert loop.time() < deadline, f"origin slots still held: {active}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("status", [999, 600, 700])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_status_outside_200_599_is_a_502(edge_env, caplog, status, method):
    env = await edge_env()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=b"odd", headers={"Cache-Control": "max-age=60"})

    env.origin.route("/odd", handler=handler)
    r = await env.request(method, "/odd")
    assert r.status == 502
    assert "fwd-status" not in r.cache_status
    assert r.cache_status.endswith("detail=invalid-status")
    assert not [rec for rec in caplog.records if rec.exc_info]
    await slots_back_to_zero(env)
    assert (await env.get("/healthz")).status == 200


async def test_a_304_to_an_unconditional_fill_is_a_502(edge_env):
    env = await edge_env()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=304, headers={"ETag": '"x"'})

    env.origin.route("/n", handler=handler)
    r = await env.get("/n")
    assert r.status == 502
    assert r.cache_status == member("fwd=uri-miss", "fwd-status=304", "detail=unexpected-304")
    await slots_back_to_zero(env)


async def test_a_client_that_leaves_mid_body_releases_the_origin(edge_env):
    env = await edge_env(max_object_bytes=1024)
    gate = asyncio.Event()
    env.origin.route("/big", headers=[("Cache-Control", "max-age=60")],
                     chunks=[b"x" * 4096, b"y" * 4096], chunk_gate=(0, gate))
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    writer.write(f"GET /big HTTP/1.1\r\nHost: {env.host}\r\n\r\n".encode())
    async with asyncio.timeout(WAIT):
        await reader.readuntil(b"\r\n\r\n")
    writer.close()
    gate.set()
    await slots_back_to_zero(env)


async def test_an_origin_that_dies_mid_body_releases_its_slot(edge_env):
    env = await edge_env()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=60",
                                           "Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"partial")
        assert request.transport is not None
        request.transport.close()
        return resp

    env.origin.route("/dies", handler=handler)
    with contextlib.suppress(Exception):  # the client sees a cut response
        await env.get("/dies")
    await slots_back_to_zero(env)
    assert env.app.store.get(env.key("/dies"), (), env.clock()) is None or (
        env.app.store.get(env.key("/dies"), (), env.clock()).hit_for_miss)


async def test_a_coalesced_waiter_whose_client_left_leaks_nothing(edge_env):
    env = await edge_env()
    gate = asyncio.Event()
    env.origin.route("/slow", headers=[("Cache-Control", "max-age=60")], body=b"S", gate=gate)
    leader = asyncio.ensure_future(env.get("/slow"))
    await env.origin.wait_count("/slow", 1)
    _reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    writer.write(f"GET /slow HTTP/1.1\r\nHost: {env.host}\r\n\r\n".encode())
    await writer.drain()
    flights = env.app.coalescer.flights
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while flights[env.key("/slow")].waiters < 1:  # the second request waits on the first
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    writer.close()
    gate.set()
    r = await leader
    assert r.status == 200
    await slots_back_to_zero(env)
    assert env.origin.count("/slow") == 1


@pytest.mark.parametrize(("method", "status"), [("TRACE", 405), ("PROPFIND", 501),
                                                ("MKCOL", 501)])
async def test_methods_the_edge_does_not_proxy(edge_env, method, status):
    env = await edge_env()
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    writer.write(f"{method} /x HTTP/1.1\r\nHost: {env.host}\r\n\r\n".encode())
    async with asyncio.timeout(WAIT):
        got, headers, _ = await read_response(reader)
    writer.close()
    assert got == status
    assert "GET" in headers["Allow"]
    assert env.origin.seen == []


# -- validation: a bare 304 validates the one response it was asked about ------------------------
@pytest.mark.parametrize("validators", [[("ETag", '"v1"')],
                                        [("Last-Modified", "Sun, 01 Jun 2025 00:00:00 GMT")]])
@pytest.mark.parametrize("cc", ["max-age=1", "max-age=1, must-revalidate", "no-cache"])
async def test_a_304_without_validators_freshens_what_was_asked(edge_env, validators, cc):
    env = await edge_env()
    env.origin.route("/v", headers=[("Cache-Control", cc), *validators], body=b"V",
                     not_modified=[("Cache-Control", cc)])
    await env.get("/v")
    env.clock.advance(10)
    r = await env.get("/v")
    assert (r.status, r.body) == (200, b"V")
    assert r.cache_status == member("fwd=stale", "fwd-status=304")
    assert env.origin.count("/v") == 2  # validated once, no unconditional refetch
    assert env.origin.requests("/v")[1].header(
        "If-None-Match" if validators[0][0] == "ETag" else "If-Modified-Since") is not None


async def test_a_304_without_validators_and_vary(edge_env):
    env = await edge_env()
    env.origin.route("/vv", headers=[("Cache-Control", "max-age=1"), ("ETag", '"e"'),
                                     ("Vary", "Accept-Language")], body=b"VV",
                     not_modified=[("Cache-Control", "max-age=1")])
    await env.get("/vv", [("Accept-Language", "en")])
    env.clock.advance(10)
    r = await env.get("/vv", [("Accept-Language", "en")])
    assert r.cache_status == member("fwd=stale", "fwd-status=304")
    assert env.origin.count("/vv") == 2


@pytest.mark.parametrize("cc", [("Cache-Control", "max-age=600, no-cache"),
                                ("CDN-Cache-Control", "no-cache")])
async def test_no_cache_is_never_served_stale_when_the_origin_is_down(edge_env, cc):
    env = await edge_env()
    env.origin.route("/nc", headers=[("Cache-Control", "max-age=600"), cc, ("ETag", '"n"')],
                     body=b"NC")
    assert (await env.get("/nc")).status == 200
    await env.origin.stop()
    r = await env.get("/nc")
    assert r.status in (502, 504)
    assert r.cache_status.endswith("detail=origin-unreachable")


async def test_a_tier_that_fails_to_start_leaves_no_origin_pool_running(monkeypatch):
    from edgeutil import FakeClock, TestOrigin, topology_dict

    from edge import main as edge_main
    from edge.upstream import OriginPool
    from geoconfig.topology import parse_topology

    origin = TestOrigin("origin-1", FakeClock())
    await origin.start()
    pools: list[OriginPool] = []
    real_start = OriginPool.start

    async def tracked(self: OriginPool) -> None:
        pools.append(self)
        await real_start(self)

    async def broken(self) -> None:
        raise RuntimeError("tier cannot start")

    monkeypatch.setattr(OriginPool, "start", tracked)
    monkeypatch.setattr(edge_main.RegionTier, "start", broken)
    data = topology_dict([origin], {})
    data["regions"][0]["redis"] = {"url": "redis://127.0.0.1:1"}
    try:
        with pytest.raises(RuntimeError, match="tier cannot start"):
            await edge_main.start_edge(parse_topology(data), "us-east-1",
                                       listen=("127.0.0.1", 0))
        assert len(pools) == 1
        assert pools[0]._probes == [] and not any(e.idle for e in pools[0].endpoints.values())
    finally:
        await origin.stop()
