"""Caps on client connections, per edge and per client address (pure policy: no I/O).

Rules (what nginx does):

- Over ``max_connections`` (nginx ``worker_connections``) a new connection is closed at once,
  unanswered: answering would spend what the cap protects (file descriptors, memory).
- Over ``max_per_address`` (nginx ``limit_conn`` on ``$binary_remote_addr``) a new connection
  is answered ``503`` (nginx's ``limit_conn_status``) and closed; the other clients are not
  affected.
- Addresses in ``exempt`` (networks, e.g. the GeoDNS prober's) are never refused and are not
  counted, so ``/healthz`` keeps answering while the caps are reached by others; keep the
  process's file-descriptor limit above ``max_connections`` plus the origin connections so
  there is room for them.
- A refusal is logged at most once per ``log_interval`` seconds per kind, with how many were
  refused since the last line (a flood must not flood the log).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from enum import Enum

log = logging.getLogger("geoedge.edge.limits")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Verdict(Enum):
    ADMIT = 0  # counted: call ``release`` when it closes
    EXEMPT = 3  # not counted
    EDGE_FULL = 1  # close at once
    ADDRESS_FULL = 2  # answer 503 and close


class ConnectionLimiter:
    def __init__(self, max_connections: int, max_per_address: int,
                 exempt: Iterable[str] = (), log_interval: float = 10.0) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.exempt: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False)
                                                 for n in exempt)
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.refused = {Verdict.EDGE_FULL: 0, Verdict.ADDRESS_FULL: 0}
        self._log_interval = log_interval
        self._logged_at = {Verdict.EDGE_FULL: float("-inf"), Verdict.ADDRESS_FULL: float("-inf")}
        self._unlogged = {Verdict.EDGE_FULL: 0, Verdict.ADDRESS_FULL: 0}

    def is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.exempt)

    def admit(self, address: str, now: float) -> Verdict:
        """Count a new connection from ``address``, or refuse it (then nothing is counted)."""
        if self.exempt and self.is_exempt(address):
            return Verdict.EXEMPT
        held = self.by_address.get(address, 0)
        if self.total >= self.max_connections:
            return self._refuse(Verdict.EDGE_FULL, address, now)
        if held >= self.max_per_address:
            return self._refuse(Verdict.ADDRESS_FULL, address, now)
        self.total += 1
        self.by_address[address] = held + 1
        return Verdict.ADMIT

    def release(self, address: str) -> None:
        """A connection that ``admit`` answered ADMIT has closed."""
        held = self.by_address.get(address, 0)
        if held <= 0:
            return
        self.total -= 1
        if held == 1:
            del self.by_address[address]
        else:
            self.by_address[address] = held - 1

    def _refuse(self, verdict: Verdict, address: str, now: float) -> Verdict:
        self.refused[verdict] += 1
        self._unlogged[verdict] += 1
        if now - self._logged_at[verdict] >= self._log_interval:
            if verdict is Verdict.EDGE_FULL:
                log.warning("connection limit reached: %d client connections (edge."
                            "max_connections); %d refused since the last report, last from %s",
                            self.total, self._unlogged[verdict], address)
            else:
                log.warning("per-address connection limit reached: %s holds %d connections "
                            "(edge.max_connections_per_address); %d refused since the last "
                            "report", address, self.by_address.get(address, 0),
                            self._unlogged[verdict])
            self._logged_at[verdict] = now
            self._unlogged[verdict] = 0
        return verdict
