"""Pure origin selection: per-origin state and the five load-balancing algorithms.

Rules:

* No I/O and no clock: every time-dependent call takes ``now`` (seconds, monotonic).
* Availability: an origin is *available* when its active probe says up (never probed = up),
  it is not passively ejected and it is not in ``exclude``. When no origin is available
  ``pick`` fails open to every origin not in ``exclude`` (nginx likewise tries its peers
  anyway when all are marked failed): a possibly-wrong health signal must not turn into a
  guaranteed outage. ``pick`` returns None only when every origin is excluded.
* round_robin is nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c):
  every candidate gains its weight, the largest current weight wins (first on ties) and
  loses the candidates' total. Deterministic: weights 5,1,1 give ``a a b a c a a``. nginx's
  lowered ``effective_weight`` after a failure is not modelled: ejection handles failures.
* least_conn: fewest ``active / weight``; ties are broken by smooth round robin among them.
* ewma: Finagle/Linkerd "peak EWMA". The cost is ``latency * (active + 1)``; latency is a
  time-weighted EWMA (w = exp(-Δt/tau)) that jumps straight to a sample above it (peak) and,
  like Finagle's ``get()`` observing 0, decays toward 0 while no samples arrive, so an origin
  that was slow gets probed again later. Unknown latency is 0 (new origins get tried). Ties
  (e.g. all unknown) are broken by smooth round robin. Only successful requests are sampled:
  a fast "connection refused" must not make a broken origin look attractive.
* ip_hash: nginx's ip_hash. ``hash = 89; hash = (hash*113 + byte) % 6271`` over the first
  three octets of an IPv4 client (all 16 bytes of IPv6; IPv4-mapped IPv6 counts as IPv4),
  mapped onto the weights of the *whole* pool so the mapping does not move when an origin is
  down. An unavailable result is rehashed (the loop continues from the current hash) up to 20
  times, then round robin. A client address that does not parse uses round robin.
* consistent_hash: a ketama ring: 40 md5 digests of ``"{name}-{i}"`` per unit of weight,
  4 little-endian 32-bit points per digest (160 points per unit weight). The key hashes the
  same way (first point of md5(key)); the ring is walked clockwise past unavailable origins.
  Origins hash by name, so moving an origin to a new address remaps nothing.
* Passive ejection (nginx max_fails/fail_timeout): ``max_fails`` failures within
  ``fail_window`` seconds eject the origin for ``fail_timeout`` seconds. A success clears the
  failure history (an ejection in progress still runs its course).
* ``on_finish(ok=None)`` means "no verdict" (e.g. the request was cancelled by our own side):
  the active count drops but neither the failure history nor the latency changes.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from geoconfig.cdnconfig import LB_ALGORITHMS, EdgeSettings, OriginServer

__all__ = ["DEFAULT_TAU", "Balancer", "OriginState"]

DEFAULT_TAU = 10.0  # seconds: EWMA decay time constant
_KETAMA_DIGESTS_PER_WEIGHT = 40  # * 4 points per md5 digest = 160 points per unit weight
_IP_HASH_TRIES = 20


@dataclass(slots=True)
class OriginState:
    origin: OriginServer
    active: int = 0
    ewma: float | None = None  # seconds, as of ewma_at
    ewma_at: float = 0.0
    up: bool = True
    fails: deque[float] = field(default_factory=deque)
    ejected_until: float = -math.inf
    current_weight: int = 0  # smooth weighted round robin

    @property
    def name(self) -> str:
        return self.origin.name

    def latency(self, now: float, tau: float) -> float:
        """The EWMA as seen at ``now``: decays toward 0 since the last sample; unknown = 0."""
        if self.ewma is None:
            return 0.0
        return self.ewma * math.exp(-max(now - self.ewma_at, 0.0) / tau)

    def observe(self, now: float, sample: float, tau: float) -> None:
        if self.ewma is None or sample > self.ewma:
            self.ewma = sample  # first sample, or peak sensitivity
        else:
            w = math.exp(-max(now - self.ewma_at, 0.0) / tau)
            self.ewma = self.ewma * w + sample * (1.0 - w)
        self.ewma_at = now

    def recent_fails(self, now: float, window: float) -> int:
        return sum(1 for t in self.fails if now - t <= window)


class Balancer:
    def __init__(
        self,
        origins: Iterable[OriginServer],
        algorithm: str = "round_robin",
        *,
        max_fails: int = 3,
        fail_window: float = 10.0,
        fail_timeout: float = 10.0,
        tau: float = DEFAULT_TAU,
    ) -> None:
        if algorithm not in LB_ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r} (one of {LB_ALGORITHMS})")
        if max_fails < 1 or fail_window <= 0 or fail_timeout <= 0 or tau <= 0:
            raise ValueError("max_fails, fail_window, fail_timeout and tau must be positive")
        self.algorithm = algorithm
        self.max_fails = max_fails
        self.fail_window = fail_window
        self.fail_timeout = fail_timeout
        self.tau = tau
        self._states: list[OriginState] = []
        self._by_name: dict[str, OriginState] = {}
        for origin in origins:
            if origin.name in self._by_name:
                raise ValueError(f"duplicate origin name {origin.name!r}")
            state = OriginState(origin)
            self._states.append(state)
            self._by_name[origin.name] = state
        self._total_weight = sum(s.origin.weight for s in self._states)
        self._ring, self._ring_owner = _ketama_ring(self._states)

    @classmethod
    def from_settings(
        cls, origins: Iterable[OriginServer], settings: EdgeSettings, *, tau: float = DEFAULT_TAU
    ) -> Balancer:
        return cls(origins, settings.lb, max_fails=settings.max_fails,
                   fail_window=settings.fail_window, fail_timeout=settings.fail_timeout, tau=tau)

    @property
    def origins(self) -> list[OriginServer]:
        return [s.origin for s in self._states]

    def state(self, name: str) -> OriginState:
        return self._by_name[name]

    def available(self, name: str, now: float) -> bool:
        state = self._by_name[name]
        return state.up and now >= state.ejected_until

    # -- selection -------------------------------------------------------------------------

    def pick(
        self, now: float, *, key: str, client_ip: str, exclude: frozenset[str] = frozenset()
    ) -> OriginServer | None:
        candidates = [s for s in self._states if s.name not in exclude]
        pool = [s for s in candidates if s.up and now >= s.ejected_until] or candidates
        if not pool:
            return None
        if self.algorithm == "least_conn":
            best = min(s.active / s.origin.weight for s in pool)
            chosen = _smooth_wrr([s for s in pool if s.active / s.origin.weight == best])
        elif self.algorithm == "ewma":
            costs = [s.latency(now, self.tau) * (s.active + 1) for s in pool]
            low = min(costs)
            chosen = _smooth_wrr([s for s, c in zip(pool, costs, strict=True) if c == low])
        elif self.algorithm == "ip_hash":
            chosen = self._ip_hash(client_ip, pool) or _smooth_wrr(pool)
        elif self.algorithm == "consistent_hash":
            chosen = self._ring_walk(key, pool)
        else:
            chosen = _smooth_wrr(pool)
        return chosen.origin

    def _ip_hash(self, client_ip: str, pool: Sequence[OriginState]) -> OriginState | None:
        address = _ip_hash_bytes(client_ip)
        if address is None:
            return None
        allowed = {id(s) for s in pool}
        h = 89
        for _ in range(_IP_HASH_TRIES):
            for byte in address:
                h = (h * 113 + byte) % 6271
            w = h % self._total_weight
            for state in self._states:
                if w < state.origin.weight:
                    break
                w -= state.origin.weight
            if id(state) in allowed:
                return state
        return None

    def _ring_walk(self, key: str, pool: Sequence[OriginState]) -> OriginState:
        allowed = {id(s) for s in pool}
        start = bisect.bisect_left(self._ring, _ketama_points(key)[0])
        n = len(self._ring)
        for i in range(n):
            state = self._ring_owner[(start + i) % n]
            if id(state) in allowed:
                return state
        raise AssertionError("unreachable: every origin has ring points")

    # -- feedback --------------------------------------------------------------------------

    def on_start(self, name: str) -> None:
        self._by_name[name].active += 1

    def on_finish(self, name: str, now: float, latency: float, ok: bool | None) -> None:
        state = self._by_name[name]
        state.active = max(state.active - 1, 0)
        if ok is None:
            return
        if ok:
            state.fails.clear()
            state.observe(now, max(latency, 0.0), self.tau)
            return
        state.fails.append(now)
        while state.fails and now - state.fails[0] > self.fail_window:
            state.fails.popleft()
        if len(state.fails) >= self.max_fails:
            state.ejected_until = now + self.fail_timeout
            state.fails.clear()

    def set_health(self, name: str, up: bool) -> None:
        self._by_name[name].up = up

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        out = []
        for s in self._states:
            latency = s.latency(now, self.tau) if s.ewma is not None else None
            out.append({
                "name": s.name,
                "weight": s.origin.weight,
                "up": s.up,
                "ejected": now < s.ejected_until,
                "ejected_for": max(s.ejected_until - now, 0.0),
                "active": s.active,
                "ewma_ms": None if latency is None else round(latency * 1000.0, 3),
                "fails": s.recent_fails(now, self.fail_window),
            })
        return out


def _smooth_wrr(pool: Sequence[OriginState]) -> OriginState:
    total = 0
    best = pool[0]
    for state in pool:
        state.current_weight += state.origin.weight
        total += state.origin.weight
        if state.current_weight > best.current_weight:
            best = state
    best.current_weight -= total
    return best


def _ip_hash_bytes(client_ip: str) -> bytes | None:
    try:
        address = ipaddress.ip_address(client_ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.packed[:3] if address.version == 4 else address.packed


def _ketama_points(text: str) -> list[int]:
    digest = hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def _ketama_ring(states: Sequence[OriginState]) -> tuple[list[int], list[OriginState]]:
    points: list[tuple[int, str, OriginState]] = []
    for state in states:
        for i in range(_KETAMA_DIGESTS_PER_WEIGHT * state.origin.weight):
            points.extend((p, state.name, state) for p in _ketama_points(f"{state.name}-{i}"))
    points.sort(key=lambda t: (t[0], t[1]))  # name breaks point collisions deterministically
    return [p for p, _, _ in points], [s for _, _, s in points]
