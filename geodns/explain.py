"""``geoedge explain``: show how the server would answer one client, with the same engine.

Health: ``explain`` does not probe; it shows every edge as the server would see it before its
first probe (up), unless ``--probe`` is asked for.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys

from geodata import GeoDatabaseError, rank_regions
from geodns.engine import Engine
from geodns.health import HealthChecker
from geodns.main import load_engine
from geodns.wire import Ecs, name_to_text, text_to_name


def _ecs_for(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Ecs:
    """The ECS option a resolver would send for this address (/24 or /56, RFC 7871 §11.1)."""
    source = 24 if ip.version == 4 else 56
    packed = ip.packed[: (source + 7) // 8]
    return Ecs(1 if ip.version == 4 else 2, source, packed)


def explain_lines(engine: Engine, ip_text: str, names: list[str]) -> list[str]:
    """What the server answers this client; raises ValueError for a bad address or name."""
    ip = ipaddress.ip_address(ip_text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # as a dual-stack socket
        ip = ip.ipv4_mapped
    wanted = [_name(n) for n in names]
    engine.maps.ready.wait(30)  # the scope merged for the current health (a background merge)
    ecs = _ecs_for(ip)
    reader = engine.reader
    lines = [f"client      {ip} (as ECS {ip}/{ecs.source})",
             f"database    {reader.path} ({reader.database_type})"]
    if ip.is_global:
        decision = engine.decide(ecs, "127.0.0.1")
    else:
        decision = engine.locate(ip, scoped=False)
        lines.append("note        the address is not global: servers ignore it as ECS and "
                     "locate the resolver instead; shown as if the resolver were the client")
    loc = decision.location if decision.location is not None else reader.locate(ip)
    if not loc.found:
        lines.append(f"location    not in the database in {loc.network}: default region")
    else:
        coords = (f"{loc.latitude:.4f}, {loc.longitude:.4f}" if loc.latitude is not None
                  else "no coordinates")
        lines.append(f"location    country {loc.country or '-'}, continent {loc.continent or '-'}"
                     f", {coords}; database network {loc.network}")
    ranking = rank_regions(loc, engine.regions, engine.topology.default_region)
    lines.append(f"ranking     by {ranking.method}")
    for i, (name, dist) in enumerate(zip(ranking.order, ranking.distances_km, strict=True), 1):
        health = ", ".join(f"{e.name} {'up' if engine.health.get(e.name, True) else 'DOWN'}"
                           for e in engine.edges[name])
        km = f"{dist:8.0f} km" if dist is not None else "       - km"
        lines.append(f"  {i}. {name:<16}{km}   {health}")
    geo = engine.zones.geo_names()
    for wire in wanted or list(geo):
        target, hops = wire, []
        while target not in geo and (nxt := engine.zones.cname_target(target)) is not None:
            if nxt in hops or len(hops) >= 16:
                break
            hops.append(nxt)
            target = nxt
        g = geo.get(target)
        if g is None:
            lines.append(f"answer      {name_to_text(wire)}: not a geo-routed name")
            continue
        via = "".join(f" -> CNAME {name_to_text(h)}" for h in hops)
        region, state = engine.choice(g, decision.order)
        v4, v6 = engine.addresses(g, decision.order)
        note = {"failed-open": " (every region is down: failing open to the nearest)",
                "fallback": "the fallback (every region is down)"}.get(state, "")
        prefix = f"{name_to_text(wire)}{via}" if hops else g.name
        lines.append(f"answer      {prefix} -> {region}{note}")
        lines.append(f"              A    {' '.join(v4) or '-'}   TTL {g.ttl}")
        lines.append(f"              AAAA {' '.join(v6) or '-'}   TTL {g.ttl}")
    lines.append(f"ecs scope   /{decision.scope} for geo-routed names, /0 for the others")
    return lines


def _name(text: str) -> bytes:
    name = text if text.endswith(".") else text + "."
    try:
        wire = text_to_name(name)
    except (UnicodeError, ValueError):
        raise ValueError(f"not a DNS name: {text!r}") from None
    if len(wire) > 255 or any(len(label) > 63 for label in name.rstrip(".").split(".")):
        raise ValueError(f"not a DNS name: {text!r}")
    return wire


async def _probe_all(engine: Engine) -> None:
    topology = engine.topology
    checker = HealthChecker(topology.edges, topology.health, engine.set_health,
                            topology.pool_probes())
    probes = list(checker.probes().values())
    await checker.start()
    try:
        for _ in range(max(max(p.settings.fall, p.settings.rise) for p in probes)):
            results = await asyncio.gather(*(checker.probe(p.edge, p.settings) for p in probes))
            for probe, ok in zip(probes, results, strict=True):
                checker.record(probe.key, ok)
    finally:
        await checker.stop()


def run_explain(config: str, ip: str, name: str | None, probe: bool = False) -> int:
    try:
        engine = load_engine(config)
    except GeoDatabaseError as exc:
        print(f"geoedge: geoip database error: {exc}", file=sys.stderr)
        return 2
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        print(f"geoedge: not an IP address: {ip!r}", file=sys.stderr)
        return 2
    if probe:
        asyncio.run(_probe_all(engine))
    try:
        text = "\n".join(explain_lines(engine, ip, [name] if name else []))
    except ValueError as exc:
        print(f"geoedge: {exc}", file=sys.stderr)
        return 2
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
