"""HTTPS termination and sites, end to end: a trustme CA made here, real clients (curl, httpx,
Python's ssl), real edge listeners. SNI picks each site's certificate (RSA and ECDSA), a wildcard
site, an unknown Host (421, nothing forwarded), HSTS and the 308 redirect, the scheme in the key
and X-Forwarded-Proto, certificate swaps under load with no failed request, bad certificates
rejected on reload, garbage and stalled handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge.main import alpn_protocols, start_edge
from edge.reload import Reloader
from edge.tls import CertError, load_pair
from geoconfig.topology import parse_topology
from geoedge.client.fetch import (
    Fetcher,
    TlsConnector,
    client_context,
    format_report,
    parse_url,
)
from tests.edgeutil import DEFAULT_EDGE, EDGE_NAME, FakeClock, TestOrigin, topology_dict
from tests.h2util import IMPLS, h2_class

CACHED = [("Cache-Control", "max-age=60")]
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the .event_loop_policy. fixture")
WAIT = 10.0


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Each test on both loops: the CLI runs uvloop, whose TLS is its own."""
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, where: Path, stem: str, *names: str,
               key_type: trustme.KeyType = trustme.KeyType.RSA) -> tuple[str, str]:
    cert = ca.issue_cert(*names, key_type=key_type)
    c, k = where / f"{stem}.pem", where / f"{stem}.key"
    tmp_c, tmp_k = where / f".{stem}.pem", where / f".{stem}.key"
    cert.private_key_pem.write_to_path(str(tmp_k))
    cert.cert_chain_pems[0].write_to_path(str(tmp_c))
    os.replace(tmp_k, k)  # atomically, as a deploy tool would
    os.replace(tmp_c, c)
    return str(c), str(k)


class Env:
    def __init__(self, tmp: Path, ca: trustme.CA) -> None:
        self.tmp, self.ca = tmp, ca
        self.origins: dict[str, TestOrigin] = {}
        self.edge: Any = None
        self.doc: dict[str, Any] = {}
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))

    async def start(self, **edge: Any) -> None:
        clock = FakeClock()
        for name in ("default", "alpha", "beta"):
            o = TestOrigin(f"{name}-o", clock)
            await o.start()
            o.route("/who", body=name.encode(), headers=CACHED)
            o.route("/echo", headers=CACHED, echo=True)
            self.origins[name] = o
        alpha = write_pair(self.ca, self.tmp, "alpha", "www.alpha.test", "alpha.test")
        beta = write_pair(self.ca, self.tmp, "beta", "*.beta.test",
                          key_type=trustme.KeyType.ECDSA)
        dflt = write_pair(self.ca, self.tmp, "default", "edge.default.test")
        doc = topology_dict([self.origins["default"]], {**DEFAULT_EDGE, **edge})
        doc["edge"].update({"tls_cert": dflt[0], "tls_key": dflt[1]})
        doc["sites"] = [
            self._site("alpha", ["www.alpha.test", "alpha.test"], alpha,
                       tls_extra={"hsts": "max-age=600", "redirect_http": True}),
            self._site("beta", ["*.beta.test"], beta),
        ]
        self.doc = doc
        topology = parse_topology(doc, source=str(self.tmp / "t.toml"))
        self.edge = await start_edge(topology, EDGE_NAME, listen=("127.0.0.1", 0),
                                     clock=clock, tls_listen=("127.0.0.1", 0))
        self.reloader = Reloader(str(self.tmp / "t.toml"), topology, self.edge.router,
                                 self.edge.acceptor, alpn_protocols(),
                                 load=lambda p: parse_topology(self.doc, source=p))

    def _site(self, name: str, hosts: list[str], pair: tuple[str, str],
              tls_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        o = self.origins[name]
        return {"name": name, "hosts": hosts,
                "origins": [{"name": f"{name}-1", "host": "127.0.0.1", "port": o.port}],
                "origin_health_interval": 3600.0,
                "tls": {"cert": pair[0], "key": pair[1], **(tls_extra or {})}}

    async def stop(self) -> None:
        if self.edge is not None:
            await self.edge.stop()
        for o in self.origins.values():
            await o.stop()

    @property
    def tls_port(self) -> int:
        return self.edge.tls_port

    def client(self, **kw: Any) -> httpx.AsyncClient:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.AsyncClient(verify=ctx, timeout=WAIT, **kw)

    async def peer_cert(self, server_name: str | None) -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        _, writer = await asyncio.open_connection("127.0.0.1", self.tls_port, ssl=ctx,
                                                  server_hostname=server_name or None)
        try:
            obj = writer.get_extra_info("ssl_object")
            der = obj.getpeercert(binary_form=True)
            key = x509.load_der_x509_certificate(der).public_key()
            return {"cert": obj.getpeercert(), "cipher": obj.cipher(),
                    "ec": isinstance(key, ec.EllipticCurvePublicKey),
                    "version": obj.version(), "alpn": obj.selected_alpn_protocol()}
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


def names_of(cert: dict[str, Any]) -> set[str]:
    return {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}


@pytest.fixture
async def env(tmp_path: Path, ca: trustme.CA):
    e = Env(tmp_path, ca)
    yield e
    await e.stop()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def curl(env: Env, host: str, path: str, *extra: str) -> Ran:
    """curl in a subprocess (awaited: the edge runs in this test's loop)."""
    url = f"https://{host}:{env.tls_port}{path}"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "--cacert", str(env.ca_file), "--resolve",
        f"{host}:{env.tls_port}:127.0.0.1", "-D", "-", *extra, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return Ran(proc.returncode or 0, out.decode(), err.decode())


async def test_sni_picks_each_sites_certificate(env: Env):
    await env.start()
    alpha = await env.peer_cert("www.alpha.test")
    beta = await env.peer_cert("x.beta.test")
    none = await env.peer_cert(None)
    unknown = await env.peer_cert("nobody.test")
    assert names_of(alpha["cert"]) == {"www.alpha.test", "alpha.test"}
    assert names_of(beta["cert"]) == {"*.beta.test"}
    assert beta["ec"] and not alpha["ec"]  # ECDSA and RSA
    assert names_of(none["cert"]) == names_of(unknown["cert"]) == {"edge.default.test"}
    assert alpha["version"] in ("TLSv1.3", "TLSv1.2")
    assert alpha["alpn"] == alpn_protocols()[0]  # h2 when the HTTP/2 server is there


async def test_curl_and_httpx_reach_each_site_over_https(env: Env):
    await env.start()
    out = await curl(env, "www.alpha.test", "/who")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("alpha")
    assert "strict-transport-security: max-age=600" in out.stdout.lower()
    async with env.client() as c:
        for host in ("a.beta.test", "deep.er.beta.test"):  # the wildcard site
            r = await c.get(f"https://127.0.0.1:{env.tls_port}/who", headers={"Host": host},
                            extensions={"sni_hostname": host})
            assert (r.status_code, r.text) == (200, "beta")
    assert env.origins["beta"].count("/who") == 2  # one entry per host, both from beta's pool
    assert env.origins["default"].seen == [] and env.origins["alpha"].count("/who") == 1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_tls_version_floor_is_1_2(env: Env):
    await env.start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(env.ca_file))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", env.tls_port, ssl=ctx,
                                      server_hostname="www.alpha.test")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    _, w = await asyncio.open_connection("127.0.0.1", env.tls_port, ssl=ctx,
                                         server_hostname="www.alpha.test")
    assert w.get_extra_info("ssl_object").version() == "TLSv1.2"
    w.close()


async def test_unknown_host_gets_421_and_nothing_is_forwarded(tmp_path: Path, ca: trustme.CA):
    e = Env(tmp_path, ca)
    try:
        await e.start()
        e.doc = {**e.doc, "origins": []}  # no default site any more
        assert await e.reloader.reload("test")
        async with e.client() as c:
            r = await c.get(f"https://127.0.0.1:{e.tls_port}/who",
                            headers={"Host": "nobody.test"},
                            extensions={"sni_hostname": "edge.default.test"})
            assert r.status_code == 421
            plain = await c.get(f"http://127.0.0.1:{e.edge.port}/who",
                                headers={"Host": "nobody.test"})
            assert plain.status_code == 421
            health = await c.get(f"http://127.0.0.1:{e.edge.port}/healthz")
            assert health.status_code == 200  # the edge's own paths, whatever the Host
        e.doc["edge"]["unknown_host_status"] = 404
        assert await e.reloader.reload("test")
        async with e.client() as c:
            plain = await c.get(f"http://127.0.0.1:{e.edge.port}/who",
                                headers={"Host": "nobody.test"})
            assert plain.status_code == 404
        assert all(o.seen == [] for o in e.origins.values())
    finally:
        await e.stop()


async def test_redirect_hsts_scheme_in_key_and_forwarded_proto(env: Env):
    await env.start()
    async with env.client() as c:
        r = await c.get(f"http://127.0.0.1:{env.edge.port}/who?x=1",
                        headers={"Host": "www.alpha.test"})
        assert r.status_code == 308
        assert r.headers["location"] == f"https://www.alpha.test:{env.tls_port}/who?x=1"
        assert "strict-transport-security" not in r.headers  # never over plain HTTP
        # beta has no redirect: the same path over http and https are two entries
        for scheme, port in (("http", env.edge.port), ("https", env.tls_port)):
            for _ in range(2):
                r = await c.get(f"{scheme}://127.0.0.1:{port}/echo",
                                headers={"Host": "a.beta.test"},
                                extensions={"sni_hostname": "a.beta.test"})
                assert r.status_code == 200
            seen = env.origins["beta"].last("/echo")
            assert seen.header("X-Forwarded-Proto") == scheme
            assert seen.header("Forwarded") == f"for=127.0.0.1;proto={scheme}"
    assert env.origins["beta"].count("/echo") == 2


async def test_certificate_swap_under_load_fails_no_request(env: Env):
    await env.start()
    watcher = asyncio.get_running_loop().create_task(env.reloader.watch(interval=0.05))
    before = names_of((await env.peer_cert("x.beta.test"))["cert"])
    failures: list[BaseException] = []
    done = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal done
        # no keep-alive: every request is a new handshake, so some cross the swap
        async with env.client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while not stop.is_set():
                try:
                    r = await c.get(f"https://127.0.0.1:{env.tls_port}/who",
                                    headers={"Host": "a.beta.test"},
                                    extensions={"sni_hostname": "a.beta.test"})
                    assert r.status_code == 200
                    done += 1
                except (httpx.HTTPError, AssertionError, ssl.SSLError) as exc:
                    failures.append(exc)

    clients = [asyncio.get_running_loop().create_task(load()) for _ in range(4)]
    try:
        async with asyncio.timeout(WAIT):
            while done < 20:
                await asyncio.sleep(0.01)
        reloads = env.reloader.reloads
        write_pair(env.ca, env.tmp, "beta", "*.beta.test", "beta.test",
                   key_type=trustme.KeyType.ECDSA)
        async with asyncio.timeout(WAIT):
            while env.reloader.reloads == reloads:
                await asyncio.sleep(0.01)
        after_swap = done
        async with asyncio.timeout(WAIT):
            while done < after_swap + 20:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.gather(*clients)
        watcher.cancel()
    assert failures == []
    assert before == {"*.beta.test"}
    assert names_of((await env.peer_cert("x.beta.test"))["cert"]) == {"*.beta.test",
                                                                     "beta.test"}


async def test_bad_certificates_are_rejected_and_the_old_ones_kept(env: Env, ca: trustme.CA):
    await env.start()
    alpha_cert = env.doc["sites"][0]["tls"]["cert"]
    other = write_pair(ca, env.tmp, "other", "other.test")
    with pytest.raises(CertError, match="does not match"):
        load_pair(Path(alpha_cert), Path(other[1]), ["http/1.1"], True)
    with pytest.raises(CertError, match="cannot read"):
        load_pair(env.tmp / "missing.pem", Path(other[1]), ["http/1.1"], True)
    env.doc["sites"][0]["tls"]["key"] = other[1]  # mismatched pair
    assert not await env.reloader.reload("test")
    Path(env.tmp / "garbage.pem").write_text("not a certificate\n")
    env.doc["sites"][0]["tls"] = {"cert": str(env.tmp / "garbage.pem"), "key": other[1]}
    assert not await env.reloader.reload("test")
    env.doc["sites"][0]["hosts"] = ["bad host"]  # a config error: named key, old kept
    assert not await env.reloader.reload("test")
    assert env.reloader.rejected == 3
    out = await curl(env, "www.alpha.test", "/who")
    assert out.returncode == 0 and out.stdout.endswith("alpha"), out.stderr


async def test_garbage_and_stalled_handshakes_hold_nothing(env: Env):
    await env.start(client_header_timeout=0.5)
    limiter = env.edge.limiter
    stalled = []
    for _ in range(5):  # opened, then silent
        stalled.append(await asyncio.open_connection("127.0.0.1", env.tls_port))
    half = await asyncio.open_connection("127.0.0.1", env.tls_port)
    half[1].write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    for _ in range(5):  # garbage instead of a ClientHello
        r, w = await asyncio.open_connection("127.0.0.1", env.tls_port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(512))
        async with asyncio.timeout(WAIT):  # the edge closes it (maybe after an alert)
            await r.read(-1)
        w.close()
    out = await curl(env, "www.alpha.test", "/who")  # others are served meanwhile
    assert out.returncode == 0 and out.stdout.endswith("alpha"), out.stderr
    for r, _w in [*stalled, half]:  # the edge closes the stalled ones
        async with asyncio.timeout(WAIT):
            assert await r.read(-1) == b""
    for _, w in [*stalled, half]:
        w.close()
    async with asyncio.timeout(WAIT):
        while env.edge.acceptor.handshaking or limiter.total:
            await asyncio.sleep(0.01)
    assert env.edge.acceptor.failed >= 11


async def test_geoedge_fetch_verifies_and_names_the_protocol(env: Env, tmp_path: Path):
    await env.start()
    target = parse_url(f"https://www.alpha.test:{env.tls_port}/who")
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    async with aiohttp.ClientSession(connector=TlsConnector()) as session:
        good = Fetcher(target, "GET", [], None, session,
                       ssl_context=client_context(str(env.ca_file)))
        result, body = await good.once("127.0.0.1")
        assert (result.status, body) == (200, b"alpha")
        assert result.tls is not None and result.tls.startswith("TLSv1.")
        assert result.tls.endswith("ALPN http/1.1")
        assert "tls " in format_report(result)
        bad = Fetcher(target, "GET", [], None, session,
                      ssl_context=client_context(str(tmp_path / "other.pem")))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await bad.once("127.0.0.1")


def resumed_twice(port: int, ca_file: Path) -> tuple[bool, bool]:
    """Two TLS 1.2 connections, the second offering the first's session (ticket)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    reused = []
    session = None
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw, \
                ctx.wrap_socket(raw, server_hostname="www.alpha.test", session=session) as s:
            reused.append(s.session_reused)
            session = s.session
    return reused[0], reused[1]


async def test_session_tickets_resume_until_the_keys_rotate(env: Env):
    await env.start()
    port = env.tls_port
    assert await asyncio.to_thread(resumed_twice, port, env.ca_file) == (False, True)
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw, \
                ctx.wrap_socket(raw, server_hostname="www.alpha.test", session=session) as s:
            return s.session, s.session_reused

    session, _ = await asyncio.to_thread(connect, None)
    await env.reloader.rotate_tickets()  # fresh contexts, fresh ticket keys
    _, reused = await asyncio.to_thread(connect, session)
    assert not reused  # the old ticket no longer decrypts: a full handshake


async def test_site_cache_key_rules_and_purge_token(env: Env):
    await env.start()
    beta = env.doc["sites"][1]
    beta["cache_key"] = {"query": "ignore", "query_params": ["utm"], "sort_query": True}
    beta["purge_token"] = "beta-purge-token"
    assert await env.reloader.reload("test")

    def seen() -> list[str]:
        return [s.path for s in env.origins["beta"].seen if s.path.startswith("/who?")]

    async with env.client() as c:
        def url(q: str) -> str:
            return f"http://127.0.0.1:{env.edge.port}/who?{q}"

        for q in ("a=1&b=2", "b=2&a=1&utm=x", "utm=y&a=1&b=2"):
            r = await c.get(url(q), headers={"Host": "a.beta.test"})
            assert (r.status_code, r.text) == (200, "beta")
        # one entry for the three; the origin got the first request's query as sent
        assert seen() == ["/who?a=1&b=2"]
        denied = await c.request("PURGE", url("a=1&b=2"), headers={
            "Host": "a.beta.test", "Authorization": "Bearer test-purge-token"})
        assert denied.status_code in (401, 403)  # [edge]'s token is not beta's
        ok = await c.request("PURGE", url("a=1&b=2"), headers={
            "Host": "a.beta.test", "Authorization": "Bearer beta-purge-token"})
        assert ok.status_code == 200
        await c.get(url("b=2&a=1"), headers={"Host": "a.beta.test"})
    assert seen() == ["/who?a=1&b=2", "/who?b=2&a=1"]


async def test_the_connections_scheme_wins_over_an_absolute_form_target(env: Env):
    await env.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", env.edge.port)
    try:  # plain HTTP claiming https:// in the target
        writer.write(b"GET https://a.beta.test/echo HTTP/1.1\r\nHost: a.beta.test\r\n"
                     b"Connection: close\r\n\r\n")
        async with asyncio.timeout(WAIT):
            answer = await reader.read(-1)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert env.origins["beta"].last("/echo").header("X-Forwarded-Proto") == "http"


class StubH2(asyncio.Protocol):
    """Stands in for edge.h2server.H2Protocol: same constructor shape, says who it is."""

    made: list[StubH2] = []

    def __init__(self, handler: Any, limits: Any, on_close: Any = None,
                 limiter: Any = None) -> None:
        self.handler, self.on_close, self.scheme = handler, on_close, "http"

    def connection_made(self, transport: Any) -> None:
        StubH2.made.append(self)
        transport.write(b"stub h2 for " + self.scheme.encode())
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_close is not None:
            self.on_close(self)


async def test_alpn_h2_is_offered_and_dispatched_when_the_h2_server_exists(
        env: Env, monkeypatch: pytest.MonkeyPatch):
    import edge.main

    monkeypatch.setattr(edge.main, "h2_protocol", lambda: StubH2)
    assert edge.main.alpn_protocols() == ("h2", "http/1.1")
    await env.start()
    h2 = await env.peer_cert("www.alpha.test")
    assert h2["alpn"] == "h2"
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    reader, writer = await asyncio.open_connection("127.0.0.1", env.tls_port, ssl=ctx,
                                                  server_hostname="www.alpha.test")
    async with asyncio.timeout(WAIT):
        assert await reader.read(-1) == b"stub h2 for https"
    writer.close()
    assert StubH2.made and StubH2.made[-1].handler is env.edge.router
    out = await curl(env, "www.alpha.test", "/who", "--http1.1")  # http/1.1 still works
    assert out.returncode == 0 and out.stdout.endswith("alpha"), out.stderr


async def test_a_site_with_an_rsa_and_an_ecdsa_certificate(env: Env, ca: trustme.CA):
    await env.start()
    ecdsa = write_pair(ca, env.tmp, "alpha-ec", "www.alpha.test", "alpha.test",
                       key_type=trustme.KeyType.ECDSA)
    env.doc["sites"][0]["tls"].update({"alt_cert": ecdsa[0], "alt_key": ecdsa[1]})
    assert await env.reloader.reload("test")
    assert (await env.peer_cert("www.alpha.test"))["ec"]  # a client that takes ECDSA gets it

    def rsa_only() -> bool:
        ctx = ssl.create_default_context(cafile=str(env.ca_file))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        with socket.create_connection(("127.0.0.1", env.tls_port), timeout=WAIT) as raw, \
                ctx.wrap_socket(raw, server_hostname="www.alpha.test") as s:
            key = x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).public_key()
            return isinstance(key, ec.EllipticCurvePublicKey)

    assert not await asyncio.to_thread(rsa_only)  # one that offers only RSA suites: RSA


async def test_handshakes_under_way_are_capped(env: Env):
    await env.start(max_connections=3, client_header_timeout=5.0)
    stalled = [await asyncio.open_connection("127.0.0.1", env.tls_port) for _ in range(3)]
    acceptor = env.edge.acceptor
    async with asyncio.timeout(WAIT):
        while len(acceptor.tasks) < 3:
            await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.tls_port)
    async with asyncio.timeout(WAIT):  # the fourth is closed at once, not left to time out
        assert await reader.read(-1) == b""
    writer.close()
    assert acceptor.refused == 1
    for _, w in stalled:
        w.close()
    async with asyncio.timeout(WAIT):  # the slots come back: served again
        while acceptor.tasks:
            await asyncio.sleep(0.01)
    out = await curl(env, "www.alpha.test", "/who")
    assert out.returncode == 0 and out.stdout.endswith("alpha"), out.stderr


@pytest.mark.parametrize("impl", IMPLS)
async def test_http2_through_the_https_listener_picks_the_site_and_caches(
        env: Env, impl: str, monkeypatch: pytest.MonkeyPatch):
    """The real H2Protocol behind the real TLS listener (ALPN h2): each site by SNI/Host,
    hits from the shared cache, HTTP/1.1 clients on the same port still served; on both
    HTTP/2 layers."""
    import edge.main

    cls = h2_class(impl)
    monkeypatch.setattr(edge.main, "h2_protocol", lambda: cls)
    await env.start()
    async with env.client(http2=True) as c:
        got = []
        for host in ("www.alpha.test", "a.beta.test", "www.alpha.test"):
            r = await c.get(f"https://127.0.0.1:{env.tls_port}/who", headers={"Host": host},
                            extensions={"sni_hostname": host})
            got.append((r.http_version, r.status_code, r.text,
                        "hit" in r.headers.get("cache-status", "")))
    assert got == [("HTTP/2", 200, "alpha", False), ("HTTP/2", 200, "beta", False),
                   ("HTTP/2", 200, "alpha", True)]
    assert env.origins["alpha"].count("/who") == 1
    out = await curl(env, "www.alpha.test", "/who", "--http2")
    assert out.returncode == 0 and out.stdout.startswith("HTTP/2 200"), out.stdout
    out = await curl(env, "www.alpha.test", "/who", "--http1.1")
    assert out.returncode == 0 and out.stdout.startswith("HTTP/1.1 200"), out.stdout
