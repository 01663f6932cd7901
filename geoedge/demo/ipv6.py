"""Whether the demo's AAAA answers can be reached, and what to do on this host to make them so.

GeoDNS answers AAAA queries with the edges' ``ipv6`` addresses (``fd00:0:0:N::M`` in the demo),
which are nobody's on a normal machine. They become reachable when both hold:

1. the addresses are local: as root, the demo adds each one to ``lo`` (``ip -6 addr add
   ADDR/128 dev lo nodad``) and removes, on stop, exactly those it added (one already there is
   left alone, so another demo's addresses survive this one);
2. each edge listens on its ``ipv6`` as well as its ``ipv4``: the demo gives each edge
   ``--listen IPV4:PORT --listen [IPV6]:PORT`` (``geoedge edge`` serves every ``--listen``).

Not root, or no ``ip`` command, or ``ip`` failing: the demo leaves the host's network alone
and says why AAAA answers are not reachable. Two demos running at once as root share the
addresses: the one that added them removes them when it stops, so the other's AAAA answers
stop being reachable then (its IPv4 ones are unaffected).

Pure except :func:`apply` and :func:`undo`, which run the planned ``ip`` commands.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from geoconfig.topology import Topology

# ``geoedge edge`` serves several ``--listen`` addresses (edge/main.py): the plan gives each
# edge ``--listen IPV4:PORT --listen [IPV6]:PORT``. False: edges listen on their ipv4 only.
EDGE_LISTENS_ON_IPV6 = True
NOT_LISTENING = "the edges listen on their ipv4 only"


@dataclass(frozen=True, slots=True)
class Ipv6Plan:
    addresses: tuple[str, ...]  # every edge ipv6 address of the topology, in order
    add: tuple[tuple[str, ...], ...] = ()  # ip commands to run at start (as root)
    why_not: str = ""  # non-empty: AAAA answers will not be reachable, and why
    listen: dict[str, str] = field(default_factory=dict)  # edge name -> "[V6]:PORT" to add

    @property
    def reachable(self) -> bool:
        return bool(self.addresses) and not self.why_not


def edge_addresses(topology: Topology) -> list[tuple[str, str, int]]:
    """(edge name, ipv6, port) for every edge with an ``ipv6``."""
    return [(e.name, str(ipaddress.IPv6Address(e.ipv6)), e.port)
            for e in topology.edges if e.ipv6]


def plan_ipv6(topology: Topology, euid: int, ip_binary: str | None,
              local: Sequence[str] = (), edges_listen: bool = EDGE_LISTENS_ON_IPV6) -> Ipv6Plan:
    """What to do for the topology's edge ipv6 addresses. ``local``: addresses already
    configured on this host (not added, not removed)."""
    edges = edge_addresses(topology)
    addresses = tuple(a for _, a, _ in edges)
    if not edges:
        return Ipv6Plan(())
    if not edges_listen:
        return Ipv6Plan(addresses, why_not=NOT_LISTENING)
    listen = {name: f"[{addr}]:{port}" for name, addr, port in edges}
    here = {str(ipaddress.IPv6Address(a)) for a in local}
    missing = [a for a in dict.fromkeys(addresses) if a not in here]
    if not missing:
        return Ipv6Plan(addresses, listen=listen)
    if euid != 0:
        return Ipv6Plan(addresses, why_not="the addresses are not on this host and adding them "
                                           "to lo needs root (run the demo as root)")
    if ip_binary is None:
        return Ipv6Plan(addresses, why_not="the addresses are not on this host and there is no "
                                           "`ip` command to add them (apt-get install iproute2)")
    add = tuple((ip_binary, "-6", "addr", "add", f"{a}/128", "dev", "lo", "nodad")
                for a in missing)
    return Ipv6Plan(addresses, add=add, listen=listen)


def undo_commands(added: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """The ``ip ... addr del`` for each ``addr add`` that succeeded, in reverse order."""
    return [(*cmd[:3], "del", *cmd[4:7]) for cmd in reversed(added)]


def apply(plan: Ipv6Plan) -> tuple[list[tuple[str, ...]], str]:
    """Run the plan's commands; (those that succeeded, why the rest failed or "")."""
    done: list[tuple[str, ...]] = []
    for cmd in plan.add:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return done, f"`{' '.join(cmd)}` failed: {result.stderr.strip() or result.returncode}"
        done.append(cmd)
    return done, ""


def undo(added: Sequence[tuple[str, ...]]) -> None:
    for cmd in undo_commands(added):
        subprocess.run(cmd, capture_output=True, check=False)


def local_addresses(ip_binary: str | None) -> list[str]:
    """The IPv6 addresses configured on this host (``ip -6 -o addr show``)."""
    if ip_binary is None:
        return []
    result = subprocess.run((ip_binary, "-6", "-o", "addr", "show"), capture_output=True,
                            text=True, check=False)
    words = [line.split() for line in result.stdout.splitlines()]
    return [w[w.index("inet6") + 1].split("/")[0] for w in words if "inet6" in w]


def summary(plan: Ipv6Plan, failure: str = "") -> str:
    """The demo's line about AAAA answers ("" when the topology has no edge ipv6)."""
    if not plan.addresses:
        return ""
    why = failure or plan.why_not
    if why:
        return (f"AAAA answers ({len(plan.addresses)} edge addresses, {plan.addresses[0]}, ...)"
                f" are not reachable here: {why}.")
    return f"AAAA answers are reachable: the edges listen on {', '.join(plan.addresses)}."


__all__ = ["EDGE_LISTENS_ON_IPV6", "Ipv6Plan", "apply", "edge_addresses", "local_addresses",
           "plan_ipv6", "summary", "undo", "undo_commands"]
