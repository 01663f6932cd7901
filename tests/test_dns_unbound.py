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

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from demoutil import free_port
from dnsutil import ServerThread, demo_engine, dig
from unboundutil import CONF, running_unbound, unbound_binary

from geodns.wire import parse_query

EU, US, AP = ["127.0.2.1", "127.0.2.2"], ["127.0.1.1", "127.0.1.2"], ["127.0.3.1", "127.0.3.2"]


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
    conf = Path(work) / "unbound.conf"
    conf.write_text(CONF.format(port=free_port(), dir=work, geoedge=geoedge[0].port))
    with running_unbound(binary, conf) as port:
        yield port


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
