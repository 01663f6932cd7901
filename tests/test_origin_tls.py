"""TLS to origins (#14): real TLS with a CA made in the test (trustme), aiohttp origins over
HTTPS on port 0, the pool alone and a whole edge (a bad origin certificate: refused, a clear
error logged, 502)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import trustme
from aiohttp import web
from edgeutil import DEFAULT_EDGE, EDGE_NAME, topology_dict

from edge.main import start_edge
from edge.upstream import OriginPool, UpstreamError
from geoconfig.cdnconfig import EdgeSettings, OriginServer
from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError

NAME = "origin.test"


def settings() -> EdgeSettings:
    return replace(EdgeSettings(), connect_timeout=2.0, read_timeout=5.0,
                   origin_health_interval=3600.0, retries=0)


class TlsOrigin:
    """An aiohttp origin over TLS that records the SNI and client certificate it saw."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sni: list[str | None] = []
        self.peers: list[object] = []
        ctx.sni_callback = lambda sock, name, _: self.sni.append(name)  # type: ignore[assignment]
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peercert")
                          if request.transport else None)
        return web.Response(text="secret", headers={"Cache-Control": "max-age=60"})

    async def start(self) -> TlsOrigin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_ctx(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


@pytest.fixture
async def tls_origin() -> AsyncIterator:
    started: list[TlsOrigin] = []

    async def make(ctx: ssl.SSLContext) -> TlsOrigin:
        origin = await TlsOrigin(ctx).start()
        started.append(origin)
        return origin

    yield make
    for origin in started:
        await origin.stop()


def https(origin: TlsOrigin, **kw) -> OriginServer:
    return OriginServer("secure", "127.0.0.1", origin.port, scheme="https",
                        **({"tls_server_name": NAME} | kw))


async def get(pool: OriginPool) -> tuple[int, bytes]:
    async with await pool.fetch("GET", "/x", [("Host", "www.example.test")], None, key="k",
                                client_ip="") as resp:
        return resp.status, await resp.read()


async def test_verified_origin_with_sni(ca, ca_file, tls_origin):
    origin = await tls_origin(server_ctx(ca, NAME))
    pool = OriginPool([https(origin, tls_ca_file=ca_file)], settings())  # no probes
    assert await get(pool) == (200, b"secret")
    assert await get(pool) == (200, b"secret")
    assert pool.connects == {"secure": 1}  # kept alive over TLS too
    await pool.stop()
    assert origin.sni[-1] == NAME
    assert pool.snapshot()[0]["url"].startswith("https://")


@pytest.mark.parametrize("case", ["other-ca", "wrong-name", "system-store"])
async def test_bad_certificate_is_refused_with_a_clear_error(ca, ca_file, tls_origin, caplog,
                                                             case):
    issuer = trustme.CA() if case == "other-ca" else ca
    origin = await tls_origin(server_ctx(issuer, "other.test" if case == "wrong-name" else NAME))
    extra = {} if case == "system-store" else {"tls_ca_file": ca_file}
    pool = OriginPool([https(origin, **extra)], settings())
    with caplog.at_level(logging.ERROR, "geoedge.edge.upstream"):
        with pytest.raises(UpstreamError) as info:
            await get(pool)
        with pytest.raises(UpstreamError):  # refused again, but not logged again at once
            await get(pool)
    assert "certificate" in str(info.value)
    assert pool.connects == {"secure": 2}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "TLS certificate of origin secure" in message and NAME in message
    assert ("Hostname mismatch" in message) if case == "wrong-name" else (
        "unable to get local issuer certificate" in message)
    assert origin.peers == []  # no request reached it
    await pool.stop()


async def test_verification_off_only_explicitly_with_a_warning(tls_origin, caplog):
    origin = await tls_origin(server_ctx(trustme.CA(), "whatever.test"))
    with caplog.at_level(logging.WARNING, "geoedge.edge.upstream"):
        pool = OriginPool([https(origin, tls_verify=False)], settings())
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    assert await get(pool) == (200, b"secret")
    await pool.stop()


async def test_client_certificate(ca, ca_file, tls_origin, tmp_path):
    ctx = server_ctx(ca, NAME)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    origin = await tls_origin(ctx)
    pool = OriginPool([https(origin, tls_ca_file=ca_file)], settings())
    with pytest.raises(UpstreamError):  # the origin wants a certificate
        await get(pool)
    await pool.stop()
    client = ca.issue_cert("edge.example")
    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    for blob in client.cert_chain_pems:
        with cert.open("ab") as f:
            f.write(blob.bytes())
    client.private_key_pem.write_to_path(str(key))
    pool = OriginPool([https(origin, tls_ca_file=ca_file, tls_cert_file=str(cert),
                             tls_key_file=str(key))], settings())
    assert await get(pool) == (200, b"secret")
    assert origin.peers[-1]["subject"] != ()
    await pool.stop()


async def test_unreadable_ca_file_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"origins\[secure\]\.tls_ca_file"):
        OriginPool([OriginServer("secure", "127.0.0.1", 1, scheme="https",
                                 tls_ca_file=str(bad))], settings())


def topology_with(origin: dict) -> dict:
    data = topology_dict([SimpleNamespace(name="o", port=1)], DEFAULT_EDGE)
    data["origins"] = [{"name": "o", "host": "127.0.0.1", "port": 1} | origin]
    return data


@pytest.mark.parametrize(("origin", "key", "why"), [
    ({"scheme": "ftp"}, "origins[0].scheme", "http"),
    ({"tls_verify": False}, "origins[0].tls_verify", "https"),
    ({"scheme": "https", "tls_ca_file": "/nonexistent/ca.pem"}, "origins[0].tls_ca_file",
     "no such file"),
    ({"scheme": "https", "tls_key_file": __file__}, "origins[0].tls_key_file",
     "tls_cert_file"),
    ({"scheme": "https", "tls_server_name": "a b"}, "origins[0].tls_server_name", "host"),
])
def test_bad_tls_keys_name_the_key(origin, key, why):
    with pytest.raises(ConfigError) as info:
        parse_topology(topology_with(origin))
    assert key in str(info.value) and why in str(info.value)


async def test_edge_through_an_https_origin_and_502_for_a_bad_one(ca, ca_file, tls_origin,
                                                                   caplog):
    good = await tls_origin(server_ctx(ca, NAME))
    bad = await tls_origin(server_ctx(trustme.CA(), NAME))
    for origin, status in ((good, 200), (bad, 502)):
        data = topology_with({"port": origin.port, "scheme": "https",
                              "tls_server_name": NAME, "tls_ca_file": ca_file})
        edge = await start_edge(parse_topology(data), EDGE_NAME, listen=("127.0.0.1", 0))
        try:
            async with aiohttp.ClientSession() as client, client.get(
                    f"http://127.0.0.1:{edge.port}/x",
                    headers={"Host": "www.example.test"}) as resp:
                assert resp.status == status
                if status == 200:
                    assert await resp.text() == "secret"
                else:
                    assert "origin-unreachable" in resp.headers["Cache-Status"]
        finally:
            await edge.stop()
    assert any("TLS certificate of origin o" in r.getMessage() for r in caplog.records)


async def test_an_ip_address_origin_is_checked_against_its_ip_san(ca, ca_file, tls_origin):
    origin = await tls_origin(server_ctx(ca, "127.0.0.1"))
    server = OriginServer("secure", "127.0.0.1", origin.port, scheme="https",
                          tls_ca_file=ca_file)
    pool = OriginPool([server], settings())
    assert await get(pool) == (200, b"secret")
    assert origin.sni == [None]  # no SNI for an address (RFC 6066 §3)
    await pool.stop()
