"""The dashboard's poller: asks the demo's processes how they are, once a second.

Rules:

- Every ``interval`` seconds, all at once and each bounded by ``timeout``: every edge's health
  path (as GeoDNS probes it) and its admin ``/.geoedge/stats``; every origin's
  ``/api/stats``; GeoDNS itself, once per region, for the first geo-routed name with the
  region's sample client as ECS (``model.sample_clients``); and GeoDNS's ``/metrics`` when the
  demo runs GeoDNS with a metrics listener. What fails to answer is shown as such, never raised.
- ``snapshot()`` is the JSON document the page renders (``/api/state``).
- The demo's own view of each process (stopped by the console or the page) comes from
  ``wanted(name)``, a function the demo passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dnslib

from geoconfig.topology import Edge, Topology
from geoedge.demo.dashboard import model
from geoedge.demo.services import admin_address

ECS = 8  # the EDNS Client Subnet option code (RFC 7871)


@dataclass
class EdgeView:
    edge: Edge
    admin: tuple[str, int]
    health: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    rate: model.Rate = field(default_factory=model.Rate)


@dataclass
class OriginView:
    name: str
    url: str
    up: bool = False
    rate: model.Rate = field(default_factory=model.Rate)


@dataclass
class DnsView:
    client: str
    country: str | None
    latitude: float | None
    longitude: float | None
    answer: list[str] = field(default_factory=list)
    scope: int | None = None
    error: str = ""


def ecs_query(name: str, client: str, qtype: str = "A") -> dnslib.DNSRecord:
    """A query for ``name`` carrying ``client``'s /24 (IPv4) or /56 (IPv6) as ECS."""
    ip = ipaddress.ip_address(client)
    source = 24 if ip.version == 4 else 56
    data = bytes([0, 1 if ip.version == 4 else 2, source, 0]) + ip.packed[:(source + 7) // 8]
    query = dnslib.DNSRecord.question(name, qtype)
    query.add_ar(dnslib.EDNS0(udp_len=1232, opts=[dnslib.EDNSOption(ECS, data)]))
    query.header.id = random.randrange(1 << 16)
    return query


async def ask(server: tuple[str, int], query: dnslib.DNSRecord,
              timeout: float) -> tuple[list[str], int | None]:
    """(A/AAAA addresses, ECS scope) of the answer to ``query`` over UDP."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, server)
            await loop.sock_sendall(sock, query.pack())
            while True:
                reply = dnslib.DNSRecord.parse(await loop.sock_recv(sock, 65535))
                if reply.header.id == query.header.id:
                    break
    addresses = [str(rr.rdata) for rr in reply.rr if rr.rtype in (dnslib.QTYPE.A,
                                                                  dnslib.QTYPE.AAAA)]
    scope = None
    for rr in reply.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            for opt in rr.rdata:
                if opt.code == ECS and len(opt.data) >= 4:
                    scope = opt.data[3]
    return addresses, scope


class Collector:
    def __init__(self, topology: Topology, wanted: Callable[[str], bool],
                 interval: float = 1.0, timeout: float = 0.8, metrics_url: str = "") -> None:
        """``metrics_url``: GeoDNS's /metrics (the demo's --metrics-listen); "": the
        topology's ``dns.metrics_listen``, if any."""
        self.topology = topology
        self.wanted = wanted
        self.interval = interval
        self.timeout = timeout
        self.edges = {e.name: EdgeView(e, admin_address(e, topology)) for e in topology.edges}
        self.origins = {o.name: OriginView(o.name, o.base_url) for o in topology.cdn.origins}
        self.by_address = {a: e.region for e in topology.edges for a in (e.ipv4, e.ipv6) if a}
        zone = topology.zones[0] if topology.zones else None
        self.name = zone.geo[0].name if zone and zone.geo else ""
        self.dns_server = next((hp for hp in topology.dns.listen if ":" not in hp[0]),
                               topology.dns.listen[0])
        metrics = topology.dns.metrics_listen
        self.metrics_url = metrics_url or (_url(metrics) if metrics else "")
        self.dns: dict[str, DnsView] = {}
        self.dns_rates: dict[str, model.Rate] = {}
        self.session: aiohttp.ClientSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.updated = 0.0
        self.messages: list[str] = []  # what the page's buttons did, newest last

    def load_samples(self) -> None:
        """The regions' sample clients (opens the GeoLite2 database: call in a thread)."""
        from geodata import GeoReader

        path = self.topology.geoip.database
        if path is not None and not Path(path).is_absolute():
            path = str(Path(self.topology.source).parent / path)
        reader = GeoReader(path)
        try:
            regions = [rc.region for rc in self.topology.regions]
            samples = model.sample_clients(reader, regions, self.topology.default_region)
        finally:
            reader.close()
        self.dns = {r: DnsView(ip, loc.country, loc.latitude, loc.longitude)
                    for r, (ip, loc) in samples.items()}

    async def start(self) -> None:
        await asyncio.to_thread(self.load_samples)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.session is not None:
            await self.session.close()

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await self.poll()
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - began)))

    async def poll(self) -> None:
        jobs = [self._edge(v) for v in self.edges.values()]
        jobs += [self._origin(v) for v in self.origins.values()]
        jobs += [self._dns(region, v) for region, v in self.dns.items()]
        if self.metrics_url:
            jobs.append(self._metrics())
        await asyncio.gather(*jobs)
        self.updated = time.time()

    async def _get(self, url: str) -> tuple[int | None, Any]:
        assert self.session is not None
        try:
            async with self.session.get(url) as r:
                if "json" in r.content_type:
                    return r.status, await r.json()
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None, None

    async def _edge(self, view: EdgeView) -> None:
        edge, path = view.edge, self.topology.health.path
        admin_host = f"[{view.admin[0]}]" if ":" in view.admin[0] else view.admin[0]
        stats_path = self.topology.cdn.edge.admin_path.rstrip("/") + "/stats"
        (view.health, _), (status, stats) = await asyncio.gather(
            self._get(edge.check_url_base + path),
            self._get(f"http://{admin_host}:{view.admin[1]}{stats_path}"))
        if status == 200 and isinstance(stats, dict):
            view.counters = {k: int(v) for k, v in stats.get("counters", {}).items()}
        elif view.health is None:
            view.counters = {}
        view.rate.add(time.monotonic(), model.traffic(view.counters))

    async def _origin(self, view: OriginView) -> None:
        status, stats = await self._get(view.url + "/api/stats")
        view.up = status == 200
        total = model.origin_requests(stats) if isinstance(stats, dict) else 0
        view.rate.add(time.monotonic(), total)

    async def _dns(self, region: str, view: DnsView) -> None:
        try:
            view.answer, view.scope = await ask(self.dns_server, ecs_query(self.name,
                                                                           view.client),
                                                self.timeout)
            view.error = ""
        except (OSError, TimeoutError, dnslib.DNSError) as exc:
            view.answer, view.scope = [], None
            view.error = str(exc) or exc.__class__.__name__

    async def _metrics(self) -> None:
        status, text = await self._get(self.metrics_url)
        if status != 200 or not isinstance(text, str):
            return
        now = time.monotonic()
        for region, total in model.dns_queries_by_region(text).items():
            self.dns_rates.setdefault(region, model.Rate()).add(now, int(total))

    # -- the page's document ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        regions = []
        for rc in self.topology.regions:
            edges = []
            for e in rc.edges:
                v = self.edges[e.name]
                edges.append({
                    "name": e.name, "address": e.ipv4 or e.ipv6, "ipv6": e.ipv6, "port": e.port,
                    "state": model.edge_state(self.wanted(e.name), v.health),
                    "rps": round(v.rate.value, 2), "hit_ratio": model.hit_ratio(v.counters),
                    "requests": model.traffic(v.counters), "history": list(v.rate.history)})
            dns = self.dns.get(rc.name)
            rate = self.dns_rates.get(rc.name)
            regions.append({
                "name": rc.name, "latitude": rc.region.latitude,
                "longitude": rc.region.longitude,
                "state": model.region_state([e["state"] for e in edges]), "edges": edges,
                "dns_qps": None if rate is None else round(rate.value, 2),
                "dns": None if dns is None else {
                    "client": dns.client, "country": dns.country, "latitude": dns.latitude,
                    "longitude": dns.longitude, "answer": dns.answer, "scope": dns.scope,
                    "region": model.answer_region(dns.answer, self.by_address),
                    "error": dns.error}})
        origins = [{"name": v.name, "url": v.url, "up": v.up, "rps": round(v.rate.value, 2),
                    "history": list(v.rate.history)} for v in self.origins.values()]
        return {"updated": self.updated, "name": self.name.rstrip("."),
                "dns_server": f"{self.dns_server[0]}:{self.dns_server[1]}",
                "dns_metrics": self.metrics_url or None, "regions": regions,
                "origins": origins, "messages": self.messages[-8:]}


def _url(listen: object) -> str:
    """``http://HOST:PORT/metrics`` from a ``metrics_listen`` value (text or (host, port))."""
    if isinstance(listen, tuple):
        host, port = listen
    else:
        host, _, port = str(listen).rpartition(":")
    host = str(host).strip("[]")
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


__all__ = ["Collector", "ask", "ecs_query"]
