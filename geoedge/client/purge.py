"""``geoedge purge``: purge a URL, a URL prefix or a surrogate key on every edge of a topology.

Rules:

- One request per edge, all at once: ``POST <edge.admin_path>/purge`` with the JSON body
  ``{"url"|"prefix"|"key": VALUE, "soft": bool}`` and ``Authorization: Bearer <token>`` (the
  topology's ``edge.purge_token`` unless ``--token`` is given), to the edge's ``ipv4`` (else
  ``ipv6``) and port. The edge applies it to its own store at once.
- In a region with a shared tier the body also carries ``"id"`` (one random id per command)
  and ``"wait"``: the edges log the purge in the region's purge log (edge/tier/purgelog.py;
  the id makes the region log it once however many edges receive it), purge the region's
  tier, and wait up to ``wait`` seconds (60% of ``--timeout``) for every edge of the region to
  acknowledge the log entry. An edge that was not reached (down, stopped, unreachable) but
  acknowledged the entry has applied the purge too; one that did neither catches up from the
  log when it returns, and is reported as not confirmed.
- URLs are absolute (``http://host[:port]/path``): the edges' cache key is the URL the client
  asked for, Host included.
- The report has one block per region and one line per edge: how many entries it dropped (or
  marked stale), that it confirmed through the purge log, or why the purge did not reach it.
  Exit 0 only when every edge confirmed; 1 when any did not (an edge that missed a purge may
  serve stale content until it catches up); 2 for usage and configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field

import aiohttp

from geoconfig.topology import Edge, Topology, load_topology
from geoconfig.validate import format_host_port

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    edge: str
    where: str  # HOST:PORT
    url: str
    body: dict[str, str | bool | float]
    region: str = ""
    logged: bool = False  # the region has a purge log (a shared tier)


@dataclass(slots=True)
class EdgeResult:
    reached: bool
    outcome: str  # "purged 3", "not reached: ..."
    acked: set[str] = field(default_factory=set)  # region edges that acknowledged the log
    logged: str | None = None  # the log entry id this edge reported


def edge_address(edge: Edge) -> str:
    return format_host_port(edge.ipv4 or edge.ipv6 or "127.0.0.1", edge.port)


def plan_purge(topology: Topology, kind: str, value: str, soft: bool) -> list[PurgeRequest]:
    """One request per edge of the topology (pure)."""
    if kind not in ("url", "prefix", "key"):
        raise ValueError(f"unknown purge kind {kind!r}")
    if kind in ("url", "prefix") and not value.startswith(("http://", "https://")):
        what = "URL" if kind == "url" else "--prefix"
        raise ValueError(f"{what} must be absolute (http://host[:port]/path), got {value!r}")
    path = topology.cdn.edge.admin_path.rstrip("/") + "/purge"
    return [PurgeRequest(e.name, edge_address(e), f"http://{edge_address(e)}{path}",
                         {kind: value, "soft": soft}, e.region) for e in topology.edges]


def plan_region_purge(topology: Topology, kind: str, value: str, soft: bool, purge_id: str,
                      wait: float) -> list[PurgeRequest]:
    """``plan_purge``, with the purge log's id and wait for the regions with a shared tier."""
    logged = {rc.name for rc in topology.regions if rc.redis is not None}
    out = []
    for r in plan_purge(topology, kind, value, soft):
        if r.region in logged:
            r = PurgeRequest(r.edge, r.where, r.url, {**r.body, "id": purge_id, "wait": wait},
                             r.region, True)
        out.append(r)
    return out


def confirmed(requests: list[PurgeRequest], results: list[EdgeResult]) -> list[str]:
    """Per request: the line's outcome, "" prefix-free; an edge is confirmed when its own
    request succeeded or another edge of its region saw it acknowledge the log (pure)."""
    acked: dict[str, set[str]] = {}
    for r, res in zip(requests, results, strict=True):
        acked.setdefault(r.region, set()).update(res.acked)
    lines = []
    for r, res in zip(requests, results, strict=True):
        if res.reached:
            lines.append(res.outcome)
        elif r.logged and r.edge in acked.get(r.region, set()):
            lines.append(f"confirmed through the purge log ({res.outcome})")
        elif r.logged:
            lines.append(f"NOT CONFIRMED: {res.outcome}; it catches up from the purge log "
                         "when it returns")
        else:
            lines.append(res.outcome)
    return lines


def is_ok(line: str) -> bool:
    return line.startswith(("purged", "marked stale", "confirmed"))


def format_line(request: PurgeRequest, outcome: str, width: int) -> str:
    return f"  {request.edge:<{width}}  {request.where:<21}  {outcome}"


async def _send(session: aiohttp.ClientSession, request: PurgeRequest,
                token: str) -> EdgeResult:
    try:
        async with session.post(request.url, data=json.dumps(request.body),
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"}) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return EdgeResult(False, f"not reached: {exc.__class__.__name__}: {exc}".rstrip(": "))
    if resp.status != 200:
        return EdgeResult(False, f"refused: {resp.status} {text.strip()[:120]}")
    try:
        doc = json.loads(text)
        count = int(doc["purged"])
        region = doc.get("region") or {}
        acked = {str(n) for n, ok in (region.get("edges") or {}).items() if ok}
        logged = region.get("logged")
    except (ValueError, KeyError, TypeError, AttributeError):
        return EdgeResult(False, f"unexpected answer: {text.strip()[:120]}")
    return EdgeResult(True, f"{'marked stale' if doc.get('soft') else 'purged'} {count}",
                      acked, str(logged) if logged else None)


async def _purge_all(requests: list[PurgeRequest], token: str,
                     timeout: float) -> list[EdgeResult]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return list(await asyncio.gather(*(_send(session, r, token) for r in requests)))


def report(requests: list[PurgeRequest], results: list[EdgeResult]) -> tuple[list[str], bool]:
    """The report's lines, per region then edge, and whether every edge confirmed (pure)."""
    outcomes = confirmed(requests, results)
    width = max((len(r.edge) for r in requests), default=4)
    lines: list[str] = []
    for region in dict.fromkeys(r.region for r in requests):
        rows = [(r, res, o) for r, res, o in zip(requests, results, outcomes, strict=True)
                if r.region == region]
        ok = sum(is_ok(o) for _, _, o in rows)
        entry = next((res.logged for _, res, _ in rows if res.logged), None)
        log_text = (f", purge log entry {entry}" if entry else
                    ", purge log not reached" if rows[0][0].logged else "")
        lines.append(f"region {region}: {ok} of {len(rows)} edges confirmed{log_text}")
        lines += [format_line(r, o, width) for r, _, o in rows]
    return lines, all(map(is_ok, outcomes))


def run_purge(args: argparse.Namespace) -> int:
    topology = load_topology(args.config)  # ConfigError: the CLI prints it and exits 2
    kinds = [(k, getattr(args, k)) for k in ("url", "prefix", "key") if getattr(args, k)]
    if len(kinds) != 1:
        print("geoedge purge: give exactly one of URL, --prefix URL, --key KEY", file=sys.stderr)
        return EXIT_USAGE
    if not args.timeout > 0:
        print(f"geoedge purge: --timeout must be greater than 0, got {args.timeout}",
              file=sys.stderr)
        return EXIT_USAGE
    token = args.token or topology.cdn.edge.purge_token
    if not token:
        print("geoedge purge: no token: set edge.purge_token in the topology or pass --token",
              file=sys.stderr)
        return EXIT_USAGE
    wait = round(args.timeout * 0.6, 3)
    try:
        requests = plan_region_purge(topology, kinds[0][0], kinds[0][1], args.soft,
                                     uuid.uuid4().hex, wait)
    except ValueError as exc:
        print(f"geoedge purge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = asyncio.run(_purge_all(requests, token, args.timeout))
    lines, ok = report(requests, results)
    print(f"purge {kinds[0][0]} {kinds[0][1]}{' (soft)' if args.soft else ''} "
          f"on {len(requests)} edges")
    print("\n".join(lines))
    return EXIT_OK if ok else EXIT_FAIL
