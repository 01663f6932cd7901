"""GeoDNS metrics in the Prometheus text format, served on ``[dns] metrics_listen``.

Rules:

- Nothing is counted through prometheus-client on the hot path. Queries are counted in plain
  integers: the C counters of geodns/_obs.h (the UDP fast path counts every datagram in C; the
  TCP and pure-Python UDP paths add theirs through ``obs_note``) and the engine's list
  ``counts`` (wire-cache and region-map results of the Python path). A custom collector reads
  them at scrape time and labels them: the answer's first A/AAAA address names the region of
  the edge that holds it (``region="none"``: no address answer, e.g. NXDOMAIN or SOA;
  ``"other"``: an address of no edge, a static record).
- Health (edges and regions up/down, with the time of the last change) and reloads are recorded
  by the service (geodns/main.py) through :meth:`DnsMetrics.health_changed` and
  :meth:`DnsMetrics.reloaded`, with the clock passed in.
- RRL counters are exported when the server has them: ``server.stats`` (a mapping, an object
  or a callable returning one) with integers ``rrl_dropped`` and ``rrl_slipped``.
- Without the C extension there are no query counters (only health, reloads, cache/map
  results); the server logs it at start-up.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
          33: "SRV", 35: "NAPTR", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3",
          64: "SVCB", 65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA"}
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
          "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI")
PROTOS = ("udp", "tcp")
# indexes of Engine.counts
WIRE_HIT, WIRE_MISS, MAP_HIT, MAP_MISS = range(4)


def qtype_label(qtype: int) -> str:
    return QTYPES.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    return RCODES[rcode] if rcode < len(RCODES) else f"RCODE{rcode}"


def address_regions(edges: Any) -> dict[bytes, str]:
    """Packed edge address -> its region (``edges``: the topology's Edge tuple)."""
    out: dict[bytes, str] = {}
    for e in edges:
        for text in (e.ipv4, e.ipv6):
            if text:
                out[ipaddress.ip_address(text).packed] = e.region
    return out


class DnsMetrics(Collector):
    """One server's metrics: reads ``server.obs`` (C counters), ``server.engine`` and what
    the service records; ``querylog`` (geodns/querylog.py) for its written/dropped counts."""

    def __init__(self, server: Any, now: float, read: Callable[[Any], tuple] | None = None,
                 bounds: tuple[float, ...] = (), querylog: Any = None) -> None:
        self.server = server
        self.read, self.bounds, self.querylog = read, bounds, querylog
        self.started = now
        self.health: dict[str, bool] = {}
        self.edge_changed: dict[str, float] = {}
        self.region_changed: dict[str, float] = {}
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload: tuple[float, bool] | None = None
        self._regions_of: tuple[object, dict[bytes, str]] = (None, {})
        self._lock = threading.Lock()  # the service records on the loop; scrapes on a thread

    # -- recorded by the service ---------------------------------------------------------
    def health_changed(self, health: Mapping[str, bool], now: float) -> None:
        engine = self.server.engine
        with self._lock:
            before = {r: self._region_up(r, self.health) for r in engine.edges}
            for name, up in health.items():
                if self.health.get(name, True) != up:
                    self.edge_changed[name] = now
            self.health = dict(health)
            for region, was in before.items():
                if self._region_up(region, self.health) != was:
                    self.region_changed[region] = now

    def reloaded(self, ok: bool, now: float) -> None:
        with self._lock:
            self.reloads["ok" if ok else "failed"] += 1
            self.last_reload = (now, ok)

    def _region_up(self, region: str, health: Mapping[str, bool]) -> bool:
        return any(health.get(e.name, True) for e in self.server.engine.edges.get(region, ()))

    # -- scrape ----------------------------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        engine = self.server.engine
        yield from self._queries(engine)
        yield from self._engine(engine)
        yield from self._health(engine)
        yield from self._reloads()
        yield from self._rrl()
        yield from self._querylog()

    def _region_map(self, engine: Any) -> dict[bytes, str]:
        key, table = self._regions_of
        if key is not engine.topology:
            table = address_regions(engine.topology.edges)
            self._regions_of = (engine.topology, table)
        return table

    def _queries(self, engine: Any) -> Iterator[Any]:
        obs = getattr(self.server, "obs", None)
        if obs is None or self.read is None:
            return
        answers, overflow, unanswered, ecs, paths, latency = self.read(obs)
        regions = self._region_map(engine)
        totals: dict[tuple[str, str, str, str], int] = {}
        for proto, qtype, rcode, family, addr, count in answers:
            region = regions.get(addr, "other") if family else "none"
            key = (PROTOS[proto], qtype_label(qtype), rcode_label(rcode), region)
            totals[key] = totals.get(key, 0) + count
        for p, n in enumerate(overflow):
            if n:
                key = (PROTOS[p], "other", "other", "other")
                totals[key] = totals.get(key, 0) + n
        q = CounterMetricFamily("geoedge_dns_queries", "Queries answered, by transport, query "
                                "type, response code and the region of the answered address",
                                labels=["proto", "qtype", "rcode", "region"])
        for key, n in sorted(totals.items()):
            q.add_metric(list(key), n)
        yield q
        u = CounterMetricFamily("geoedge_dns_unanswered", "Queries given no answer "
                                "(malformed, or dropped by RRL)", labels=["proto"])
        for p, n in enumerate(unanswered):
            u.add_metric([PROTOS[p]], n)
        yield u
        e = CounterMetricFamily("geoedge_dns_ecs", "Queries with and without an EDNS "
                                "Client Subnet option", labels=["present"])
        e.add_metric(["true"], ecs[0][1] + ecs[1][1])
        e.add_metric(["false"], ecs[0][0] + ecs[1][0])
        yield e
        path = CounterMetricFamily("geoedge_dns_udp_answer_path", "UDP datagrams of the C "
                                   "loop by who answered: cache (wire cache, in C), cold (built "
                                   "in C from the region map and a template), python, dropped",
                                   labels=["path"])
        for name, n in zip(("cache", "cold", "python", "dropped"), paths, strict=True):
            path.add_metric([name], n)
        yield path
        h = HistogramMetricFamily("geoedge_dns_latency_seconds", "Time from receipt to send "
                                  "(UDP C loop: per batch) or to answer (Python paths)",
                                  labels=["proto"])
        for p, values in enumerate(latency):
            counts, total = values[:-1], values[-1]
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            h.add_metric([PROTOS[p]], buckets, total)
        yield h
        hits = CounterMetricFamily("geoedge_dns_answer_cache", "Answers from the wire cache "
                                   "(hit) or built (miss), every path", labels=["result"])
        hits.add_metric(["hit"], paths[0] + engine.counts[WIRE_HIT])
        hits.add_metric(["miss"], paths[1] + engine.counts[WIRE_MISS])
        yield hits

    def _engine(self, engine: Any) -> Iterator[Any]:
        m = CounterMetricFamily("geoedge_dns_region_map", "Client locations looked up by the "
                                "Python path: found in the region map (hit) or located by the "
                                "database (miss); the C cold path's are under "
                                "geoedge_dns_udp_answer_path{path=\"cold\"}", labels=["result"])
        m.add_metric(["hit"], engine.counts[MAP_HIT])
        m.add_metric(["miss"], engine.counts[MAP_MISS])
        yield m

    def _health(self, engine: Any) -> Iterator[Any]:
        with self._lock:
            health = dict(self.health)
            edge_changed, region_changed = dict(self.edge_changed), dict(self.region_changed)
        r_up = GaugeMetricFamily("geoedge_dns_region_up", "1 when at least one edge of the "
                                 "region is up", labels=["region"])
        r_at = GaugeMetricFamily("geoedge_dns_region_last_change_timestamp_seconds",
                                 "When the region last went up or down (start-up if never)",
                                 labels=["region"])
        e_up = GaugeMetricFamily("geoedge_dns_edge_up", "1 when the edge passes its health "
                                 "checks", labels=["region", "edge"])
        e_at = GaugeMetricFamily("geoedge_dns_edge_last_change_timestamp_seconds",
                                 "When the edge last went up or down (start-up if never)",
                                 labels=["region", "edge"])
        for region, edges in engine.edges.items():
            r_up.add_metric([region], int(self._region_up(region, health)))
            r_at.add_metric([region], region_changed.get(region, self.started))
            for e in edges:
                e_up.add_metric([region, e.name], int(health.get(e.name, True)))
                e_at.add_metric([region, e.name], edge_changed.get(e.name, self.started))
        yield from (r_up, r_at, e_up, e_at)

    def _reloads(self) -> Iterator[Any]:
        with self._lock:
            reloads, last = dict(self.reloads), self.last_reload
        c = CounterMetricFamily("geoedge_dns_reloads", "Configuration reloads by result",
                                labels=["result"])
        for result, n in reloads.items():
            c.add_metric([result], n)
        yield c
        at = GaugeMetricFamily("geoedge_dns_last_reload_timestamp_seconds", "When the last "
                               "reload was tried (start-up if never)")
        at.add_metric([], last[0] if last else self.started)
        yield at
        ok = GaugeMetricFamily("geoedge_dns_last_reload_success", "1 when the last reload "
                               "succeeded (or none was tried), 0 when it failed")
        ok.add_metric([], int(last[1]) if last else 1)
        yield ok

    def _rrl(self) -> Iterator[Any]:
        stats = getattr(self.server, "stats", None)
        if callable(stats):
            stats = stats()
        if stats is None:
            return
        for key, help_text in (("rrl_dropped", "Responses dropped by response rate limiting"),
                               ("rrl_slipped", "Responses truncated (TC=1) by response rate "
                                               "limiting instead of dropped")):
            value = stats.get(key) if isinstance(stats, Mapping) else getattr(stats, key, None)
            if isinstance(value, int):
                c = CounterMetricFamily(f"geoedge_dns_{key}", help_text)
                c.add_metric([], value)
                yield c

    def _querylog(self) -> Iterator[Any]:
        log = self.querylog
        if log is None:
            return
        c = CounterMetricFamily("geoedge_dns_querylog_records", "Query log records by "
                                "result: written, or dropped because the writer fell behind",
                                labels=["result"])
        c.add_metric(["written"], log.written)
        c.add_metric(["dropped"], log.dropped)
        yield c


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def serve_metrics(metrics: DnsMetrics, host: str, port: int) -> tuple[Any, int]:
    """Start the HTTP listener (a daemon thread); returns (server, bound port). OSError when
    the address cannot be bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, open fds
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_address[1]


__all__ = ["DnsMetrics", "address_regions", "qtype_label", "rcode_label", "serve_metrics"]
