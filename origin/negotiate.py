"""Proactive negotiation for the demo endpoints /api/vary and /api/gzip. Pure functions.

Rules:

* Weighted lists (RFC 9110 §12.4.2): ``token;q=0.5, token``. A missing or unparseable q is
  1; q is clamped to [0, 1]; tokens are compared case-insensitively; empty elements skipped.
* ``pick_language`` (§12.5.4, basic filtering of RFC 4647 §3.3.1 simplified): ranges are tried
  in order of decreasing q (ties: order of appearance); a range matches a supported tag if it
  is that tag or the tag's primary subtag (``fr-CA`` -> ``fr``); ``*`` picks the default;
  q=0 ranges are skipped. No header or no match -> the default.
* ``accepts_gzip`` (§12.5.3): gzip (or x-gzip) is acceptable if listed with q > 0, or if not
  listed and ``*`` is listed with q > 0. No header -> False (we keep the identity encoding
  rather than assume anything is acceptable).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["accepts_gzip", "pick_language", "weighted"]


def _q(params: list[str]) -> float:
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 1.0
            return min(max(q, 0.0), 1.0) if q == q else 1.0  # NaN -> 1
    return 1.0


def weighted(header: str | None) -> list[tuple[str, float]]:
    """``(token, q)`` pairs, lower-cased, sorted by decreasing q (stable)."""
    if not header:
        return []
    out = []
    for item in header.split(","):
        token, *params = item.split(";")
        token = token.strip().lower()
        if token:
            out.append((token, _q(params)))
    return sorted(out, key=lambda pair: -pair[1])


def pick_language(header: str | None, supported: Sequence[str], default: str) -> str:
    for token, q in weighted(header):
        if q <= 0:
            continue
        if token == "*":
            return default
        primary = token.split("-")[0]
        for tag in supported:
            if token == tag or primary == tag:
                return tag
    return default


def accepts_gzip(header: str | None) -> bool:
    pairs = weighted(header)
    for token, q in pairs:
        if token in ("gzip", "x-gzip"):
            return q > 0
    return any(token == "*" and q > 0 for token, q in pairs)
