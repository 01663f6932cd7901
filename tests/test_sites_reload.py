"""A real ``geoedge edge`` process with [[sites]] over HTTPS: SIGHUP applies a new site and
its certificate, a file change applies too, a bad file is rejected with the key named while
the old configuration keeps serving, and a connection opened before the reloads still works."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import sys
from pathlib import Path

import pytest
import trustme
from aiohttp import web

WAIT = 15.0
SOA = ('soa = { mname = "ns1", rname = "hostmaster", serial = 1, refresh = 3600, retry = 600, '
       'expire = 604800, minimum = 60 }')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(port: int, tls_port: int, origin: int, ca_dir: Path, sites: list[str]) -> str:
    blocks = []
    for name in sites:
        host = f'"{name}.test"' if name != "bad" else '"bad host"'
        blocks.append(f"""
[[sites]]
name = "{name}"
hosts = [{host}]
origins = [{{ name = "o", host = "127.0.0.1", port = {origin} }}]
tls = {{ cert = "{ca_dir}/{name}.pem", key = "{ca_dir}/{name}.key" }}
""")
    return f"""
default_region = "r1"
[[regions]]
name = "r1"
latitude = 0.0
longitude = 0.0
continents = ["EU"]
edges = [{{ name = "e1", ipv4 = "127.0.0.1", port = {port} }}]
[[zones]]
origin = "example.test"
{SOA}
records = [{{ name = "@", type = "NS", value = "ns1" }},
           {{ name = "ns1", type = "A", value = "127.0.0.1" }}]
[edge]
tls_listen = "127.0.0.1:{tls_port}"
origin_health_interval = 3600.0
drain_timeout = 0.1
{"".join(blocks)}"""


async def get(tls_port: int, host: str, ca: Path,
              conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
              ) -> tuple[int, str, set[str]]:
    """One GET / over TLS (on ``conn`` when given): status, body, the cert's DNS names."""
    if conn is None:
        ctx = ssl.create_default_context(cafile=str(ca))
        conn = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx,
                                              server_hostname=host)
        close = True
    else:
        close = False
    reader, writer = conn
    try:
        cert = writer.get_extra_info("ssl_object").getpeercert()
        names = {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}
        writer.write(f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next(int(line.split(":")[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        body = (await reader.readexactly(length)).decode()
        return int(head.split()[1]), body, names
    finally:
        if close:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


async def until(predicate, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    last: BaseException | None = None
    while True:
        try:
            if await predicate():
                return
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, StopIteration) as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({last!r})")
        await asyncio.sleep(0.05)


@pytest.mark.skipif(sys.platform != "linux", reason="signals and loopback addresses")
async def test_sighup_and_file_changes_apply_sites_and_certificates(tmp_path: Path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for name in ("a", "b", "bad"):
        cert = ca.issue_cert(f"{name}.test")
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))

    async def origin(request: web.Request) -> web.Response:
        return web.Response(text=f"from {request.host}", headers={"Cache-Control": "max-age=60"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", origin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    oport = runner.addresses[0][1]
    port, tls_port = free_port(), free_port()
    path = tmp_path / "topology.toml"
    path.write_text(config(port, tls_port, oport, tmp_path, ["a"]))
    log = tmp_path / "edge.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geoedge.cli", "edge", "--config", str(path), "--name", "e1",
            "--listen", f"127.0.0.1:{port}", stderr=err)
    try:
        async def a_served() -> bool:
            return (await get(tls_port, "a.test", ca_file))[:2] == (200, "from a.test")

        try:
            await until(a_served, "site a over HTTPS")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {log.read_text()}") from None
        ctx = ssl.create_default_context(cafile=str(ca_file))
        kept = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx,
                                             server_hostname="a.test")
        assert (await get(tls_port, "a.test", ca_file, kept))[0] == 200
        assert (await get(tls_port, "b.test", ca_file, kept))[0] == 421  # no such site yet

        path.write_text(config(port, tls_port, oport, tmp_path, ["a", "b"]))
        proc.send_signal(signal.SIGHUP)

        async def b_served() -> bool:
            status, body, names = await get(tls_port, "b.test", ca_file)
            return (status, body, names) == (200, "from b.test", {"b.test"})

        await until(b_served, "site b after SIGHUP")
        path.write_text(config(port, tls_port, oport, tmp_path, ["a", "b", "bad"]))

        async def rejected() -> bool:
            return "sites[2].hosts[0]" in log.read_text()

        await until(rejected, "the bad file rejected, naming the key")
        assert await b_served() and await a_served()
        path.write_text(config(port, tls_port, oport, tmp_path, ["b"]))  # a removed: watched

        # a new connection for a.test gets the default certificate (b's) and fails
        # verification, so ask over the connection kept from the start: still open
        async def a_gone_on_kept() -> bool:
            return (await get(tls_port, "a.test", ca_file, kept))[0] == 421

        await until(a_gone_on_kept, "site a removed by a file change")
        assert proc.returncode is None
        kept[1].close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(WAIT):
                await proc.wait()
        await runner.cleanup()
    assert proc.returncode == 0, log.read_text()


async def test_https_port_in_use_is_a_clear_error(tmp_path: Path):
    ca = trustme.CA()
    cert = ca.issue_cert("a.test")
    cert.private_key_pem.write_to_path(str(tmp_path / "a.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "a.pem"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        tls_port = taken.getsockname()[1]
        path = tmp_path / "topology.toml"
        path.write_text(config(free_port(), tls_port, 1, tmp_path, ["a"]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geoedge.cli", "edge", "--config", str(path), "--name", "e1",
            stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(WAIT):
            _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"cannot listen for HTTPS on 127.0.0.1:{tls_port}: [Errno 98]" in err.decode()
