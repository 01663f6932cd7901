"""Test helpers: a real DNS server on port 0 in a background thread, and query helpers.

Servers run with either UDP loop: ``UDP_LOOPS`` parametrizes a fixture or test over the C loop
(skipped, with the reason, when the extension is not built) and the pure-Python one.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from geodns.engine import Engine
from geodns.main import load_engine
from geodns.server import DnsServer, fast_udp_serve

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.toml"
FAST_UDP_BUILT = fast_udp_serve() is not None
NOT_BUILT = ("the C extension geodns._fastudp is not built (no C compiler or Python headers at "
             "install time; see .ci/run)")
UDP_LOOPS = [
    pytest.param("c", id="c-loop", marks=pytest.mark.skipif(not FAST_UDP_BUILT, reason=NOT_BUILT)),
    pytest.param("python", id="python-loop"),
]


def with_udp_loop(text: str, loop: str) -> str:
    """A topology text with ``[dns] udp_fast_path`` set for ``loop`` ("c" or "python")."""
    text = re.sub(r"(?m)^udp_fast_path = .*\n", "", text)
    assert "\n[dns]\n" in text
    value = "true" if loop == "c" else "false"
    return text.replace("\n[dns]\n", f"\n[dns]\nudp_fast_path = {value}\n", 1)


@dataclass
class ServerThread:
    """A DnsServer running in its own event loop on a thread; ``stop()`` ends it."""

    engine: Engine
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 0)])
    idle_timeout: float = 10.0
    query_timeout: float | None = None
    udp_loop: str = "c"  # "c" or "python"
    check_loop: bool = True
    addresses: list[tuple[str, int]] = field(default_factory=list)
    obs: object = None  # geodns/_obs.h counters (geodns.obsrun.Observability.obs)

    def start(self) -> ServerThread:
        self.loop = asyncio.new_event_loop()
        self.server = DnsServer(self.engine, self.listen, self.idle_timeout,
                                udp_fast_path=self.udp_loop == "c",
                                query_timeout=self.query_timeout, obs=self.obs)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.addresses = self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "DNS server did not start"
        if self.check_loop:  # the loop asked for really serves (C only when it is built)
            assert self.server.udp_loop == (self.udp_loop if FAST_UDP_BUILT else "python")
        return self

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def demo_engine() -> Engine:
    return load_engine(DEMO)


def query(port: int, name: str, rdtype: str = "A", *, subnet: str | None = None,
          tcp: bool = False, host: str = "127.0.0.1", use_edns: int | bool = 0,
          payload: int = 1232) -> dns.message.Message:
    """A query through dnspython, with an optional ECS option ("81.2.69.0/24")."""
    options = []
    if subnet is not None:
        addr, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(addr, int(prefix)))
    msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype), use_edns=use_edns,
                                 options=options, payload=payload)
    msg.flags &= ~dns.flags.RD  # an authoritative query
    if tcp:
        return dns.query.tcp(msg, host, port=port, timeout=3)
    return dns.query.udp(msg, host, port=port, timeout=3, ignore_trailing=False)


def dig(port: int, *args: str, host: str = "127.0.0.1") -> str:
    """Run the real ``dig`` and return its output."""
    exe = shutil.which("dig")
    assert exe, "dig is not installed (apt-get install bind9-dnsutils)"
    out = subprocess.run([exe, f"@{host}", "-p", str(port), "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=20, check=False)
    return out.stdout + out.stderr


def ecs_scope(msg: dns.message.Message) -> int | None:
    for opt in msg.options:
        if isinstance(opt, dns.edns.ECSOption):
            return opt.scopelen
    return None


def addresses(msg: dns.message.Message) -> set[str]:
    return {rd.address for rrset in msg.answer for rd in rrset
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def demo_text(edge_port: int, watch_interval: float = 2.0, health: str = "") -> str:
    """The demo topology with its edges on ``edge_port`` and optional [health] overrides."""
    text = DEMO.read_text().replace("port = 8080", f"port = {edge_port}")
    text = text.replace("watch_interval = 2.0", f"watch_interval = {watch_interval}")
    if health:
        start = text.index("[health]")
        end = text.index("[[regions]]")
        text = text[:start] + "[health]\n" + health + "\n\n" + text[end:]
    return text


class HealthEndpoint:
    """A real HTTP server for one edge address answering GET /healthz with 200; ``stop()`` makes
    the address refuse connections, ``start()`` brings it back on the same address."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.httpd: http.server.ThreadingHTTPServer | None = None

    def start(self) -> HealthEndpoint:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = 200 if self.path == "/healthz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class DnsProcess:
    """``geoedge dns`` as a real subprocess on a free port, read from its log line."""

    def __init__(self, config: Path, *extra: str) -> None:
        exe = Path(sys.executable).parent / "geoedge"
        self.proc = subprocess.Popen(
            [str(exe), "dns", "--config", str(config), "--listen", "127.0.0.1:0", *extra],
            stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.port = 0
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = re.search(r"serving DNS on 127\.0\.0\.1 port (\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        assert self.port, "geoedge dns did not start:\n" + "".join(self.log)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; return (value, seconds taken)."""
    start = time.monotonic()
    while True:
        value = predicate()
        elapsed = time.monotonic() - start
        if value or elapsed > timeout:
            return value, elapsed
        time.sleep(interval)
