"""``geoedge purge``: purge a URL, a URL prefix or a surrogate key on every edge of a topology.

Rules:

- One request per edge, all at once: ``POST <edge.admin_path>/purge`` with the JSON body
  ``{"url"|"prefix"|"key": VALUE, "soft": bool}`` and ``Authorization: Bearer <token>`` (the
  topology's ``edge.purge_token`` unless ``--token`` is given), to the edge's ``ipv4`` (else
  ``ipv6``) and port. A region's shared tier is purged by its edges as part of the same call,
  and its other edges hear of it through Redis; asking every edge also covers regions
  without a shared tier and edges whose Redis is down.
- URLs are absolute (``http://host[:port]/path``): the edges' cache key is the URL the client
  asked for, Host included.
- The report has one line per edge: how many entries it dropped (or marked stale), or why
  the purge did not reach it. Exit 0 only when every edge confirmed; 1 when any did not (an
  edge that missed a purge may serve stale content); 2 for usage and configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass

import aiohttp

from geoconfig.topology import Edge, Topology, load_topology
from geoconfig.validate import format_host_port

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    edge: str
    where: str  # HOST:PORT
    url: str
    body: dict[str, str | bool]


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
                         {kind: value, "soft": soft}) for e in topology.edges]


def format_line(request: PurgeRequest, outcome: str, width: int) -> str:
    return f"  {request.edge:<{width}}  {request.where:<21}  {outcome}"


async def _send(session: aiohttp.ClientSession, request: PurgeRequest,
                token: str) -> tuple[bool, str]:
    try:
        async with session.post(request.url, data=json.dumps(request.body),
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"}) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"not reached: {exc.__class__.__name__}: {exc}".rstrip(": ")
    if resp.status != 200:
        return False, f"refused: {resp.status} {text.strip()[:120]}"
    try:
        doc = json.loads(text)
        count = int(doc["purged"])
    except (ValueError, KeyError, TypeError):
        return False, f"unexpected answer: {text.strip()[:120]}"
    return True, f"{'marked stale' if doc.get('soft') else 'purged'} {count}"


async def _purge_all(requests: list[PurgeRequest], token: str,
                     timeout: float) -> list[tuple[bool, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return list(await asyncio.gather(*(_send(session, r, token) for r in requests)))


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
    try:
        requests = plan_purge(topology, kinds[0][0], kinds[0][1], args.soft)
    except ValueError as exc:
        print(f"geoedge purge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcomes = asyncio.run(_purge_all(requests, token, args.timeout))
    width = max((len(r.edge) for r in requests), default=4)
    print(f"purge {kinds[0][0]} {kinds[0][1]}{' (soft)' if args.soft else ''} "
          f"on {len(requests)} edges")
    for request, (_, outcome) in zip(requests, outcomes, strict=True):
        print(format_line(request, outcome, width))
    return EXIT_OK if all(ok for ok, _ in outcomes) else EXIT_FAIL
