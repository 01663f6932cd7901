"""The dashboard's pure part: what it shows, computed from what it polled.

Rules:

- An edge's state from its health probe: ``up`` (200), ``draining`` (503: GeoDNS moves
  clients away), ``down`` (anything else, or no answer); once the demo was told to stop it
  (its process is not wanted) ``stopped``, or ``draining`` while it still says 503. A region
  is ``up`` when every edge is, ``degraded`` when some are, ``down`` when none is.
- Traffic of an edge: the client requests it answered from its counters (hits, stale, misses,
  revalidations, passes; its own health and admin answers are not traffic). Requests/s is
  the change over the rate window (the oldest and newest samples kept); the hit ratio is
  (hits + stale) / traffic, since the edge started.
- An origin's load: requests/s to it, from its ``/api/stats`` counts without ``/healthz``.
- Sample clients: for each region, the first of a few well-known client addresses (one per
  continent) that ranks the region first; its live GeoDNS answer is shown per region.
- GeoDNS metrics (when the topology has ``dns.metrics_listen``): queries by answered region
  from ``geoedge_dns_queries_total``, summed over the other labels.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from geodata import GeoReader, Location, Region, rank_regions

TRAFFIC = ("hits", "stale", "misses", "revalidations", "passes")
# one well-known address per continent, tried in this order (the demo tour's first three)
SAMPLE_CLIENTS = (("EU", "81.2.69.160"), ("NA", "8.8.8.8"), ("AS", "1.0.16.1"),
                  ("OC", "1.1.1.1"), ("SA", "200.160.2.3"), ("AF", "41.190.8.1"))
HISTORY = 60  # samples kept for the sparklines
WINDOW = 5.0  # seconds over which requests/s is measured


def edge_state(wanted: bool, health: int | None) -> str:
    """See the module rules; ``health``: the probe's status code, None for no answer."""
    if not wanted:
        return "draining" if health == 503 else "stopped"
    if health == 200:
        return "up"
    if health == 503:
        return "draining"
    return "down"


def region_state(edge_states: Sequence[str]) -> str:
    up = sum(1 for s in edge_states if s == "up")
    if up and up == len(edge_states):
        return "up"
    return "degraded" if up else "down"


def traffic(counters: Mapping[str, int]) -> int:
    return sum(int(counters.get(k, 0)) for k in TRAFFIC)


def hit_ratio(counters: Mapping[str, int]) -> float | None:
    total = traffic(counters)
    if not total:
        return None
    return (int(counters.get("hits", 0)) + int(counters.get("stale", 0))) / total


@dataclass
class Rate:
    """Requests/s of a growing counter over the last ``window`` seconds, and a history."""

    window: float = WINDOW
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def add(self, now: float, total: int) -> float:
        if self.samples and total < self.samples[-1][1]:  # restarted: counting from 0 again
            self.samples.clear()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        value = self.value
        self.history.append(round(value, 2))
        return value

    @property
    def value(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def origin_requests(stats: Mapping[str, object]) -> int:
    """Requests an origin served, from its ``/api/stats`` (``/healthz`` probes left out)."""
    by_path = stats.get("requests", {})
    if not isinstance(by_path, Mapping):
        return 0
    return sum(int(n) for path, n in by_path.items() if not str(path).startswith("/healthz"))


def sample_clients(reader: GeoReader, regions: Sequence[Region],
                   default: str) -> dict[str, tuple[str, Location]]:
    """region name -> (a client address the region is nearest for, its location)."""
    out: dict[str, tuple[str, Location]] = {}
    for region in regions:
        for continent, ip in SAMPLE_CLIENTS:
            if region.continents and continent not in region.continents:
                continue
            loc = reader.locate(ip)
            if rank_regions(loc, regions, default).order[0] == region.name:
                out[region.name] = (ip, loc)
                break
    return out


def answer_region(addresses: Iterable[str], edges: Mapping[str, str]) -> str | None:
    """The region whose edges these addresses are (``edges``: address -> region)."""
    regions = {edges.get(a) for a in addresses}
    regions.discard(None)
    return regions.pop() if len(regions) == 1 else None


_SAMPLE = re.compile(r'^geoedge_dns_queries_total\{([^}]*)\}\s+([0-9.eE+-]+)\s*$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def dns_queries_by_region(text: str) -> dict[str, float]:
    """``geoedge_dns_queries_total`` summed by its ``region`` label (Prometheus text)."""
    out: dict[str, float] = {}
    for labels, value in _SAMPLE.findall(text):
        region = dict(_LABEL.findall(labels)).get("region", "")
        try:
            out[region] = out.get(region, 0.0) + float(value)
        except ValueError:
            continue
    return out


_ANSWER = re.compile(r"^answer\s+\S+ -> (\S+)")
_SCOPE = re.compile(r"^ecs scope\s+/(\d+)")


def parse_explain(lines: Sequence[str]) -> tuple[str | None, int | None]:
    """(region, ECS scope) from ``geoedge explain`` output (the first geo name's answer)."""
    region = scope = None
    for line in lines:
        if region is None and (m := _ANSWER.match(line)):
            region = m[1]
        if scope is None and (m := _SCOPE.match(line)):
            scope = int(m[1])
    return region, scope


__all__ = ["Rate", "answer_region", "dns_queries_by_region", "edge_state", "hit_ratio",
           "origin_requests", "parse_explain", "region_state", "sample_clients", "traffic"]
