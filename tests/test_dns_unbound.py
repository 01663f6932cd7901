"""End to end through a real ECS-capable resolver: Debian's ``unbound`` (its ``subnetcache``
module) as a resolver on a loopback port, with a stub zone for the demo zone pointing at
geoedge, sending ECS to geoedge's address. Clients on three continents (their ECS given to
unbound by ``dig +subnet=``) get their region's addresses through it, and a second client
inside the scope geoedge returned is answered from unbound's cache: the queries reaching
geoedge are counted.

Without ``unbound`` the test is skipped with the reason; under CI (``CI`` set, .ci/run
installs it) it fails instead. No sleeps: readiness and results are polled with a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdataclass
import pytest
from dnsutil import ServerThread, demo_engine, dig

from geodns.wire import parse_query

EU, US, AP = ["127.0.2.1", "127.0.2.2"], ["127.0.1.1", "127.0.1.2"], ["127.0.3.1", "127.0.3.2"]


def unbound_binary() -> str:
    binary = shutil.which("unbound") or (
        "/usr/sbin/unbound" if os.access("/usr/sbin/unbound", os.X_OK) else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("unbound is missing under CI (.ci/run installs the Debian package)")
        pytest.skip("unbound is not installed (apt-get install unbound)")
    version = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    if "subnetcache" not in version:
        if os.environ.get("CI"):
            pytest.fail("this unbound is built without the subnetcache module")
        pytest.skip("this unbound is built without the subnetcache module (--enable-subnet)")
    return binary


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (unbound binds it itself just after)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


CONF = """server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-daemonize: no
    do-not-query-localhost: no
    qname-minimisation: no
    prefetch: no
    num-threads: 1
    module-config: "subnetcache iterator"
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
    max-client-subnet-ipv6: 56
    domain-insecure: "example.test"
    local-zone: "test." nodefault  # unbound serves .test itself by default (RFC 6761)
stub-zone:
    name: "example.test"
    stub-addr: 127.0.0.1@{geoedge}
"""


@pytest.fixture(scope="module")
def geoedge() -> Iterator[tuple[ServerThread, list[tuple[str, bytes]]]]:
    """geoedge (Python UDP loop, so every query reaching it is seen) and the queries it got:
    (name, ECS address) per query."""
    engine = demo_engine()
    seen: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    respond = engine.respond

    def counting(data: bytes, client: str, tcp: bool = False, idle: float = 0.0) -> bytes | None:
        q = parse_query(data)
        ecs = q.edns.ecs if q.edns is not None else None
        with lock:
            seen.append((q.qname.decode("ascii", "replace"), ecs.padded() if ecs else b""))
        return respond(data, client, tcp, idle)

    engine.respond = counting  # type: ignore[method-assign]
    srv = ServerThread(engine, udp_loop="python", check_loop=False).start()
    yield srv, seen
    srv.stop()


@pytest.fixture(scope="module")
def unbound(geoedge, tmp_path_factory) -> Iterator[int]:
    binary = unbound_binary()
    work = tmp_path_factory.mktemp("unbound")
    port = free_port()
    conf = Path(work) / "unbound.conf"
    conf.write_text(CONF.format(port=port, dir=work, geoedge=geoedge[0].port))
    check = subprocess.run([binary.replace("unbound", "unbound-checkconf"), str(conf)],
                           capture_output=True, text=True, timeout=20, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        # ready when it answers its own CHAOS id.server (never sent to geoedge)
        probe = dns.message.make_query("id.server", "TXT", dns.rdataclass.CH)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"unbound exited: {proc.stdout.read() if proc.stdout else ''}")
            try:
                dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.5)
                break
            except (TimeoutError, dns.exception.Timeout, ConnectionRefusedError):
                assert time.monotonic() < deadline, "unbound did not start answering"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def answer(out: str) -> tuple[list[str], int | None]:
    addrs = sorted(re.findall(r"^www\.example\.test\.\s+\d+\s+IN\s+A\s+(\S+)$", out, re.M))
    scope = re.search(r"CLIENT-SUBNET: \S+/\d+/(\d+)", out)
    return addrs, int(scope.group(1)) if scope else None


def reached(seen: list[tuple[str, bytes]], subnet_start: bytes) -> int:
    return sum(1 for name, ecs in seen if name.startswith("\x03www") and ecs == subnet_start)


@pytest.mark.parametrize(("client", "inside", "expected", "scope"), [
    ("81.2.69.0/24", "81.2.100.0/24", EU, 18),  # Europe (GB): 81.2.64.0/18
    ("8.8.8.0/24", "8.8.9.0/24", US, 14),  # North America: 8.8.0.0/14
    ("1.0.16.0/24", "1.0.17.0/24", AP, 15),  # Asia (JP): 1.0.0.0/15
])
def test_regions_and_scope_cache_through_unbound(unbound, geoedge, client, inside, expected,
                                                 scope):
    seen = geoedge[1]
    first_net = socket.inet_aton(client.split("/")[0])
    out = dig(unbound, "www.example.test", "A", f"+subnet={client}")
    assert answer(out) == (expected, scope), out
    assert reached(seen, first_net) == 1, seen  # unbound asked geoedge with the client's ECS
    before = len(seen)
    # a second client inside the returned scope: unbound's cache, geoedge is not asked
    again = dig(unbound, "www.example.test", "A", f"+subnet={inside}")
    addrs, _ = answer(again)
    assert addrs == expected, again
    assert len(seen) == before, seen[before:]
    inside_net = socket.inet_aton(inside.split("/")[0])
    assert reached(seen, inside_net) == 0
