"""Conditional requests (RFC 9110 §13) and the choice of status for a static representation.

Pure: every function here is a function of its arguments (the caller passes ``now``).

Rules:

* Entity tags (§8.8.3): ``"opaque"`` or ``W/"opaque"``; strong comparison needs both tags
  strong and equal, weak comparison ignores ``W/`` (§8.8.3.2). A list field that does not
  parse (junk between tags, unterminated quotes, ``*`` mixed with tags) is *malformed*:
  If-Match then never matches (412, the safe answer for a client that asked for a guarantee)
  and If-None-Match never matches (full response, also safe).
* Dates: a field that is not exactly one valid HTTP-date (invalid, a list, or sent on several
  lines) is ignored (§13.1.3, §13.1.4). RFC 2616's "a date later than now is invalid" rule for
  If-Modified-Since was dropped in RFC 7232/9110, so a future date is evaluated like any other.
* Precedence (§13.2.2): If-Match (strong, ``*`` = any current representation) -> 412; else
  If-Unmodified-Since (last-modified > date) -> 412; then If-None-Match (weak, ``*``) -> 304
  for GET/HEAD, 412 otherwise; else, for GET/HEAD only, If-Modified-Since (last-modified <=
  date) -> 304. Preconditions are evaluated only for an existing representation: a response
  that would not be 2xx (404, 405) ignores them (§13.2.1); callers do that before calling here.
* Range (§14.2) applies to GET only -- HEAD and other methods ignore it. With If-Range
  (§13.1.5) the Range is used only if If-Range holds: an entity-tag must match strongly (a weak
  tag never does); a date must equal Last-Modified exactly *and* Last-Modified must be strong,
  which we take to mean at least one second old at ``now`` (§8.8.2.2). A Range field sent on
  several lines is ignored, as is If-Range without Range.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from geoconfig.httpdate import parse_http_date
from origin.ranges import ByteRange, RangeKind, parse_range

__all__ = ["Conditions", "Decision", "EntityTag", "Outcome", "Validators", "if_range_holds",
           "parse_etag", "parse_etag_list", "preconditions", "select"]

_TAG = re.compile(r'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*')


class Outcome(enum.Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not modified"  # 304
    PRECONDITION_FAILED = "precondition failed"  # 412


@dataclass(frozen=True, slots=True)
class EntityTag:
    opaque: str  # with its double quotes
    weak: bool = False

    def __str__(self) -> str:
        return f"W/{self.opaque}" if self.weak else self.opaque


def parse_etag(text: str) -> EntityTag | None:
    m = _TAG.fullmatch(text)
    return EntityTag(m[2], bool(m[1])) if m else None


def parse_etag_list(text: str) -> list[EntityTag] | None:
    """The tags of an If-Match / If-None-Match value (not ``*``); None if malformed."""
    tags: list[EntityTag] = []
    pos = 0
    while pos < len(text):
        m = _TAG.match(text, pos)
        if m is None:
            if text[pos] in " \t,":  # empty list elements are allowed (§5.6.1)
                pos += 1
                continue
            return None
        tags.append(EntityTag(m[2], bool(m[1])))
        pos = m.end()
        if pos < len(text) and text[pos] != ",":
            return None
    return tags


@dataclass(frozen=True, slots=True)
class Validators:
    etag: str  # the current strong ETag, e.g. '"ab12..."'
    last_modified: int  # seconds since the epoch


class _Headers(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request fields this module reads; list fields joined, date fields one per line."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: tuple[str, ...] = ()
    if_unmodified_since: tuple[str, ...] = ()
    if_range: tuple[str, ...] = ()
    range: tuple[str, ...] = ()

    @classmethod
    def from_headers(cls, headers: _Headers) -> Conditions:
        def joined(name: str) -> str | None:
            values = headers.getall(name, [])
            return ", ".join(values) if values else None

        def lines(name: str) -> tuple[str, ...]:
            return tuple(headers.getall(name, []))

        return cls(joined("If-Match"), joined("If-None-Match"), lines("If-Modified-Since"),
                   lines("If-Unmodified-Since"), lines("If-Range"), lines("Range"))


def _one_date(values: Sequence[str], now: float) -> int | None:
    return parse_http_date(values[0], now) if len(values) == 1 else None


def _matches(field: str, etag: EntityTag, strong: bool) -> bool:
    if field.strip() == "*":
        return True
    tags = parse_etag_list(field)
    if tags is None:
        return False
    if strong:
        return not etag.weak and any(not t.weak and t.opaque == etag.opaque for t in tags)
    return any(t.opaque == etag.opaque for t in tags)


def preconditions(method: str, cond: Conditions, current: Validators, now: float) -> Outcome:
    """Steps 1-4 of RFC 9110 §13.2.2 for an existing representation."""
    etag = parse_etag(current.etag) or EntityTag(current.etag)
    safe = method in ("GET", "HEAD")
    if cond.if_match is not None:
        if not _matches(cond.if_match, etag, strong=True):
            return Outcome.PRECONDITION_FAILED
    else:
        date = _one_date(cond.if_unmodified_since, now)
        if date is not None and current.last_modified > date:
            return Outcome.PRECONDITION_FAILED
    if cond.if_none_match is not None:
        if _matches(cond.if_none_match, etag, strong=False):
            return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED
    elif safe:
        date = _one_date(cond.if_modified_since, now)
        if date is not None and current.last_modified <= date:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


def if_range_holds(value: str, current: Validators, now: float) -> bool:
    """§13.1.5: does an If-Range value let the Range apply to the current representation?"""
    tag = parse_etag(value)
    if tag is not None:
        mine = parse_etag(current.etag)
        return not tag.weak and mine is not None and not mine.weak and mine.opaque == tag.opaque
    date = parse_http_date(value, now)
    return date is not None and date == current.last_modified and now >= date + 1


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200, 206, 304, 412 or 416
    range: ByteRange | None = None  # for 206


def select(method: str, cond: Conditions, current: Validators, length: int,
           now: float) -> Decision:
    """The status (and byte range) for ``method`` on an existing representation."""
    outcome = preconditions(method, cond, current, now)
    if outcome is Outcome.NOT_MODIFIED:
        return Decision(304)
    if outcome is Outcome.PRECONDITION_FAILED:
        return Decision(412)
    if method != "GET" or len(cond.range) != 1:
        return Decision(200)
    if cond.if_range and (len(cond.if_range) != 1
                          or not if_range_holds(cond.if_range[0], current, now)):
        return Decision(200)
    result = parse_range(cond.range[0], length)
    if result.kind is RangeKind.PARTIAL:
        return Decision(206, result.range)
    if result.kind is RangeKind.UNSATISFIABLE:
        return Decision(416)
    return Decision(200)
