"""Tiered caching (origin shield): a region's misses go to its parent region's edges.

Rules:

- A region with ``parent = "<region>"`` in the topology sends the cache fills of its edges
  (GET misses and revalidations; never passed methods) to the parent region's edges, chosen
  by consistent hashing of the cache key over the healthy ones (``lb = consistent_hash``,
  active ``/healthz`` probes), so one parent edge holds each object; only the parent asks
  the origin. The request goes out exactly as it would to the origin (same target, Host and
  forwarded headers), plus our token in ``CDN-Loop`` (edge/policy/tiering.py).
- Loop prevention: a request whose CDN-Loop already carries our region's token goes to the
  origin (``use_parent``).
- Fallback: when no parent edge is up (every probe failed, or every attempt failed to
  connect) the fill goes straight to the origin pool. A parent that answers -- whatever the
  status -- or that times out while the request is in its hands is not bypassed: its answer
  (or the 504) stands, so a slow origin is not asked twice.
- Cache-Status: the parent's response carries its member; the child's is appended after it
  (RFC 9211 §2), in responses it forwards and in the stored copy's later hits.
- The parent's edges are reached on their public address and port (``ipv4``, else ``ipv6``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from edge.policy.headers import Headers, get_all
from edge.policy.tiering import use_parent, with_loop_token
from edge.upstream import OriginPool, UpstreamError, UpstreamResponse, UpstreamTimeout
from geoconfig.cdnconfig import EdgeSettings, OriginServer
from geoconfig.topology import Topology

log = logging.getLogger("geoedge.edge.shield")


def parent_servers(topology: Topology, region: str) -> tuple[str | None, tuple[OriginServer, ...]]:
    """The parent region of ``region`` and its edges as upstream servers (pure)."""
    parent = topology.region(region).parent
    if parent is None:
        return None, ()
    edges = topology.region(parent).edges
    return parent, tuple(OriginServer(e.name, e.ipv4 or e.ipv6 or "127.0.0.1", e.port)
                         for e in edges)


class Shield:
    """The parent region's edges as an upstream pool, with the origin pool as fallback."""

    def __init__(self, region: str, parent: str, servers: tuple[OriginServer, ...],
                 settings: EdgeSettings, origin: OriginPool) -> None:
        self.region = region
        self.parent = parent
        self.origin = origin
        shield_settings = dataclasses.replace(settings, lb="consistent_hash",
                                              origin_health_path="/healthz",
                                              origin_max_conns=0)
        self.pool = OriginPool(servers, shield_settings)
        self.counts = {"parent_fetches": 0, "fallbacks": 0, "loops": 0}

    async def start(self) -> None:
        await self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    def _any_up(self) -> bool:
        now = time.monotonic()  # the pool's clock
        return any(self.pool.balancer.available(o.name, now) for o in self.pool.origins)

    async def fetch(self, target: str, headers: Headers, *, key: str, client_ip: str,
                    on_informational: Any = None) -> UpstreamResponse:
        """GET ``target`` from the parent region (or the origin: loop, no parent edge up);
        ``on_informational``: as ``OriginPool.fetch`` (103 Early Hints relayed)."""
        loop = get_all(headers, "cdn-loop")
        if not use_parent(self.region, self.parent, loop):
            self.counts["loops"] += 1
            return await self.origin.fetch("GET", target, headers, None, key=key,
                                           client_ip=client_ip,
                                           on_informational=on_informational)
        if self._any_up():
            out = [(n, v) for n, v in headers if n.lower() != "cdn-loop"]
            out.append(("CDN-Loop", with_loop_token(loop, self.region)))
            try:
                resp = await self.pool.fetch("GET", target, out, None, key=key,
                                             client_ip=client_ip,
                                             on_informational=on_informational)
            except UpstreamTimeout:
                raise  # the parent has the request: do not ask the origin as well
            except UpstreamError as exc:
                log.warning("parent region %s unreachable (%s): fetching %s from the origin",
                            self.parent, exc, key)
            else:
                self.counts["parent_fetches"] += 1
                return resp
        self.counts["fallbacks"] += 1
        return await self.origin.fetch("GET", target, headers, None, key=key,
                                       client_ip=client_ip, on_informational=on_informational)

    def snapshot(self) -> dict[str, object]:
        return {"parent": self.parent, **self.counts, "edges": self.pool.snapshot()}


__all__ = ["Shield", "parent_servers"]
