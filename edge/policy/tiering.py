"""Pure rules of tiered caching and purge consistency: loop detection, purge matching, marks.

Rules:

- CDN-Loop (RFC 8586): every edge that sends a miss to its parent region appends its own
  region's token ``geoedge-<region>`` to the request's CDN-Loop field. An edge that finds its
  own region's token already in the request was reached through its own region before: the
  parents form a loop (two topology files that disagree), so it does not ask its parent
  again but goes to the origin (``use_parent``). Tokens are compared as the first element of
  each list member (``cdn-id [; parameters]``), case-insensitively.
- ``purge_matches(kind, value, key, tags)``: whether a purge (``url`` with the normalised
  absolute URL, ``prefix``, ``key`` = surrogate key) covers a stored entry with primary key
  ``key`` and surrogate keys ``tags``. A URL purge also covers the URL's variants keyed by
  trusted forwarding headers (``key`` = URL + " name=value..."), as the edge's own purge does.
- ``PurgeHistory``: the purges an edge applied, numbered by a local epoch. A fill takes
  ``mark()`` before it asks upstream and checks ``purged_since(mark, key, tags)`` before it
  keeps what it got: a purge applied in between covers the fill (it may carry the purged
  version), so the fill is not stored. History is bounded (``limit``); a mark older than the
  history counts as purged (nothing is known about the purges in between).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from edge.policy.headers import split_list

LOOP_TOKEN_PREFIX = "geoedge-"


def loop_token(region: str) -> str:
    return f"{LOOP_TOKEN_PREFIX}{region}"


def cdn_loop_ids(values: Iterable[str]) -> list[str]:
    """The cdn-ids of CDN-Loop field values, in order (parameters dropped)."""
    return [m.split(";", 1)[0].strip().lower() for v in values for m in split_list(v)
            if m.split(";", 1)[0].strip()]


def use_parent(region: str, parent: str | None, cdn_loop: Iterable[str]) -> bool:
    """Whether a miss in ``region`` goes to ``parent``'s edges (False: straight to origin)."""
    if parent is None:
        return False
    return loop_token(region).lower() not in cdn_loop_ids(cdn_loop)


def with_loop_token(values: Iterable[str], region: str) -> str:
    """The CDN-Loop value to send upstream: what came in, then our token."""
    return ", ".join([*(v.strip() for v in values if v.strip()), loop_token(region)])


def purge_matches(kind: str, value: str, key: str, tags: Iterable[str]) -> bool:
    if kind == "url":
        return key == value or key.startswith(value + " ")
    if kind == "prefix":
        return key.startswith(value)
    if kind == "key":
        return value in tags
    return True  # unknown kind: assume the worst


@dataclass(frozen=True, slots=True)
class Purge:
    epoch: int
    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a fill started: the local purge epoch and the region's purge log position."""

    epoch: int
    cursor: str | None  # the last purge log entry applied (None: no log)


class PurgeHistory:
    def __init__(self, limit: int = 4096) -> None:
        self.epoch = 0
        self.cursor: str | None = None  # set by the purge log follower (edge/tier/purgelog.py)
        self._recent: deque[Purge] = deque(maxlen=limit)

    def record(self, kind: str, value: str, soft: bool = False) -> None:
        self.epoch += 1
        self._recent.append(Purge(self.epoch, kind, value))

    def mark(self) -> Mark:
        return Mark(self.epoch, self.cursor)

    def purged_since(self, at: Mark, key: str, tags: Iterable[str]) -> bool:
        mark = at.epoch
        if mark >= self.epoch:
            return False
        oldest = self._recent[0].epoch if self._recent else self.epoch + 1
        if mark + 1 < oldest:  # the history no longer reaches back to the mark
            return True
        tags = frozenset(tags)
        for p in reversed(self._recent):
            if p.epoch <= mark:
                return False
            if purge_matches(p.kind, p.value, key, tags):
                return True
        return False


__all__ = ["Mark", "PurgeHistory", "cdn_loop_ids", "loop_token", "purge_matches", "use_parent",
           "with_loop_token"]
