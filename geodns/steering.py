"""Steering: which edges answer a geo name, given the client's region order and the health.

Rules (pure: health is passed in as a mapping of health keys to up/down, a key missing counts
as up; randomness as a ``draw`` function returning floats in [0, 1)):

- A geo name is served by a :class:`Serve`: its allowed regions, and per region its members,
  the edges that answer for it: the region's own edges, or the edges of a ``[[pools]]`` entry
  in that region (``pool``). A member's health key is the edge's name, or ``POOL/EDGE`` when
  the pool has its own health checks.
- A region is *up* for a serve when it is not drained (region ``weight`` 0) and one of its
  members with a weight above 0 is up. :func:`choose` takes the client's order (every region,
  nearest first), keeps the allowed regions, and picks the first that is up: state ``UP``.
  When none is: the ``fallback`` addresses if the name has them (state ``FALLBACK``), else
  fail-open to the first allowed region that is not drained (the first allowed one if all are):
  state ``FAILED_OPEN``. A drained region is skipped as a down one, but nothing is marked down.
- :func:`answer_set`: the members of the chosen region that answer: the up ones with weight
  above 0 (failed open: every member with weight above 0, or every member if none has), in
  config order, or, when the serve is *weighted*, in a weighted random order (each member's key
  ``draw() ** (1 / weight)``, largest first: Efraimidis-Spirakis sampling, so a member comes
  first with probability weight / total). Then the first ``addresses`` IPv4 and IPv6 addresses
  of that order (0: all).
- A serve is weighted when a region's members with weight above 0 have different weights, or
  ``addresses`` is below the number of such members: then each response draws anew, and the
  engine never caches its answers. Otherwise the answer is a function of the region alone (the
  caches and the C path keep working).
- What :func:`choose` returns is all an answer depends on besides the region's health, so it is
  the key the region map is merged by (geodns/maps.py): one map per distinct :func:`selection`
  of the serves, so a name restricted to some regions gets the widest scopes for its own
  regions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from geoconfig.topology import Topology
from geoconfig.zoneconfig import GeoName

UP, FAILED_OPEN, FALLBACK = "up", "failed-open", "fallback"
Health = Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    key: str  # the health key
    ipv4: str | None
    ipv6: str | None
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Serve:
    regions: tuple[str, ...]  # allowed, config order
    members: tuple[tuple[str, tuple[Member, ...]], ...]  # (region, its members)
    drained: frozenset[str] = frozenset()
    addresses: int = 0  # per family; 0: all
    fallback: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # (IPv4, IPv6)

    def of(self, region: str) -> tuple[Member, ...]:
        for name, members in self.members:
            if name == region:
                return members
        return ()

    @property
    def weighted(self) -> bool:
        for _, members in self.members:
            live = [m.weight for m in members if m.weight]
            if len(set(live)) > 1 or (self.addresses and self.addresses < len(live)):
                return True
        return False

    @property
    def selection(self) -> tuple:
        """What :func:`choose` depends on: serves that share it share a region map."""
        return (self.regions, self.drained, bool(self.fallback[0] or self.fallback[1]),
                tuple((r, tuple((m.key, m.weight > 0) for m in ms)) for r, ms in self.members))


def region_up(serve: Serve, region: str, health: Health) -> bool:
    if region in serve.drained:
        return False
    return any(m.weight and health.get(m.key, True) for m in serve.of(region))


def choose(serve: Serve, order: tuple[str, ...], health: Health) -> tuple[str, str]:
    """(region, UP / FAILED_OPEN) or ("", FALLBACK) for a client's region order."""
    allowed = [r for r in order if r in serve.regions] or list(serve.regions)
    for region in allowed:
        if region_up(serve, region, health):
            return region, UP
    if serve.fallback[0] or serve.fallback[1]:
        return "", FALLBACK
    for region in allowed:
        if region not in serve.drained:
            return region, FAILED_OPEN
    return allowed[0], FAILED_OPEN


def weighted_order(members: tuple[Member, ...], draw: Callable[[], float]) -> list[Member]:
    """A weighted random order (see the rules); weights must be above 0."""
    keyed = [(draw() ** (1.0 / m.weight), i) for i, m in enumerate(members)]
    keyed.sort(reverse=True)
    return [members[i] for _, i in keyed]


def answer_set(serve: Serve, choice: tuple[str, str], health: Health,
               draw: Callable[[], float] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (IPv4, IPv6) addresses for a choice; ``draw`` is used only by a weighted serve."""
    region, state = choice
    if state == FALLBACK:
        return serve.fallback
    members = serve.of(region)
    live = tuple(m for m in members if m.weight)
    up = state == UP
    chosen = tuple(m for m in live if health.get(m.key, True)) if up else live or members
    if draw is not None and serve.weighted and all(m.weight for m in chosen):
        chosen = tuple(weighted_order(chosen, draw))
    n = serve.addresses or None
    v4 = tuple(m.ipv4 for m in chosen if m.ipv4)[:n]
    v6 = tuple(m.ipv6 for m in chosen if m.ipv6)[:n]
    return v4, v6


def serve_for(topology: Topology, geo: GeoName) -> Serve:
    """The serve of one geo name (see the rules)."""
    pool = next((p for p in topology.pools if p.name == geo.pool), None) if geo.pool else None
    members = []
    for region in geo.regions:
        if pool is not None:
            edges = tuple(e for e in pool.edges if e.region == region)
            members.append((region, tuple(Member(e.name, pool.health_key(e), e.ipv4, e.ipv6,
                                                 e.weight) for e in edges)))
        else:
            edges = topology.region(region).edges
            members.append((region, tuple(Member(e.name, e.name, e.ipv4, e.ipv6, e.weight)
                                          for e in edges)))
    drained = frozenset(rc.name for rc in topology.regions if rc.weight == 0) & set(geo.regions)
    fallback = (tuple(a for a in geo.fallback if ":" not in a),
                tuple(a for a in geo.fallback if ":" in a))
    return Serve(tuple(geo.regions), tuple(members), drained, geo.addresses, fallback)


__all__ = ["FAILED_OPEN", "FALLBACK", "UP", "Member", "Serve", "answer_set", "choose",
           "region_up", "serve_for", "weighted_order"]
