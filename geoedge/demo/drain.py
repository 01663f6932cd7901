"""A graceful stop of edges in the demo: move clients away first, then signal.

Rules:

- An edge stops accepting as soon as it gets SIGTERM (edge/main.py), so the demo drains it
  first through its admin API (``POST <admin_path>/drain`` with the purge token): ``/healthz``
  answers 503 while the edge keeps serving.
- Then it waits as long as GeoDNS's health checks take to mark the edge down in the worst
  case: ``fall`` failed probes ``interval`` apart, the last one up to ``timeout`` late, plus
  one ``interval`` for the probe cycle that was under way (``drain_wait``). Only then does
  the supervisor send SIGTERM, and the edge finishes what is in flight within
  ``edge.drain_timeout``.
- An edge that cannot be drained (no purge token, not answering) is reported and stopped
  anyway; nothing here raises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from geoconfig.topology import Topology
from geoedge.demo.services import Service

__all__ = ["drain_edges", "drain_wait"]


def drain_wait(topology: Topology) -> float:
    """Seconds until GeoDNS has marked a draining edge down (worst case)."""
    health = topology.health
    return health.interval * (health.fall + 1) + health.timeout


async def _post(host: str, port: int, path: str, token: str, timeout: float) -> int:
    """One ``POST path`` over plain HTTP/1.1; the status (0 when it fails)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                         f"{token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
        return int(status_line.split()[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def drain_edges(topology: Topology, services: Iterable[Service],
                      report: Callable[[str], None]) -> None:
    """Drain these services' edges and wait until GeoDNS has moved their clients."""
    edges = [s for s in services if s.role == "edge"]
    token = topology.cdn.edge.purge_token
    if not edges:
        return
    if token is None:
        report("!!  no edge.purge_token: edges cannot be drained first, stopping them now")
        return
    path = topology.cdn.edge.admin_path.rstrip("/") + "/drain"
    statuses = await asyncio.gather(*(_post(s.probe.host, s.probe.port, path, token, 2.0)
                                      for s in edges))
    for service, status in zip(edges, statuses, strict=True):
        if status != 200:
            report(f"!!  {service.name} did not accept the drain (status {status or 'none'})")
    wait = drain_wait(topology)
    report(f"draining {', '.join(s.name for s in edges)}: waiting {wait:g} s for GeoDNS's "
           "health checks to move clients away")
    await asyncio.sleep(wait)
