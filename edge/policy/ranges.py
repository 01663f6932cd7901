"""Range requests answered from a stored complete response (RFC 9110 §14, §13.1.5, §13.2.2).

Pure: ``decide`` looks at nothing but its arguments (no clock: the If-Range date rule compares
the stored Date with the stored Last-Modified). The proxy acts on the decision
(edge/ranged.py builds the bytes).

Rules, first match wins:

1. Range applies to GET only (§14.2: "GET is the only method for which range handling is
   defined"): HEAD and every other method -> FULL. So does a request without Range, a stored
   response that is not a 200, or one whose origin said ``Accept-Ranges: none``.
2. The Range field must be one field line of the ``bytes`` unit (case-insensitive) with a
   valid range-set (§14.1.2): ``first-last``, ``first-`` or ``-suffix`` with decimal digits,
   ``last >= first`` (§14.1.1), empty list elements and whitespace around commas tolerated
   (§5.6.1). Anything else is invalid syntax and the field is ignored -> FULL "invalid".
3. More than ``MAX_RANGES`` range-specs -> FULL "too-many-ranges" (nginx ``max_ranges``: a
   request with very many ranges is answered as if it had none).
4. If-Range (§13.1.5), only when Range applies: one field line that is a strong entity-tag
   equal to the stored strong ETag, or an HTTP-date equal to the stored Last-Modified when
   that is a strong validator -- the stored Date at least one second later (§8.8.2.2). A weak
   tag, an invalid date, several lines or no matching validator -> FULL "if-range".
5. A zero-length representation -> FULL "empty": a suffix range of it is satisfiable
   (§14.1.3) but no Content-Range can describe zero bytes.
6. Satisfiable range-specs (§14.1.1): ``first-``/``first-last`` with ``first < length``,
   ``-suffix`` with ``suffix > 0``; ``last`` past the end is clipped to ``length - 1`` and a
   suffix longer than the representation means all of it. None satisfiable ->
   UNSATISFIABLE (416 with ``Content-Range: bytes */length``).
7. Range amplification (§14.2 allows ignoring such requests): when the satisfiable ranges add
   up to more than the representation's length (overlapping ranges asking for the same bytes
   again and again) -> FULL "overlapping-ranges", as nginx does; otherwise the ranges are
   coalesced (sorted, and overlapping or adjacent ones merged, §14.6) -> PARTIAL with one
   range (a single-part 206) or several (``multipart/byteranges``).

Huge positions (more digits than any length) are capped, never passed to ``int`` whole
(Python refuses more than 4300 digits).

The conditionals the client may also send are evaluated before Range (§13.2.2):
If-None-Match / If-Modified-Since answered 304 by the proxy take precedence.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from edge.policy.headers import Headers, get_all, get_first, split_list
from edge.policy.validation import etag_strong_match, parse_etag
from geoconfig.httpdate import parse_http_date

__all__ = ["MAX_RANGES", "ByteRange", "RangeDecision", "RangeKind", "decide", "if_range_holds",
           "parse_range_set", "satisfiable"]

MAX_RANGES = 16
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_HUGE = 10**18  # any position with more digits than this is past every representation

Spec = tuple[int | None, int | None]  # (first, last); (None, n) is the suffix range "-n"


class RangeKind(enum.Enum):
    FULL = "full"  # ignore Range: the whole stored response, 200
    PARTIAL = "partial"  # 206 with ``RangeDecision.ranges``
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int  # offset of the first byte
    last: int  # offset of the last byte, inclusive

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.first}-{self.last}/{total}"


@dataclass(frozen=True, slots=True)
class RangeDecision:
    kind: RangeKind
    ranges: tuple[ByteRange, ...] = ()
    reason: str = ""  # why FULL (sf-token-like, for logs and tests)


def _num(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > 18 else int(digits)


def parse_range_set(value: str) -> list[Spec] | None:
    """The range-specs of a ``bytes`` Range field value, or None for invalid syntax."""
    unit, eq, rest = value.strip().partition("=")
    if not eq or unit.lower() != "bytes":
        return None
    specs: list[Spec] = []
    for element in rest.split(","):
        element = element.strip(" \t")
        if not element:
            continue  # empty list elements are allowed (§5.6.1)
        m = _SPEC.fullmatch(element)
        if m is None or not (m.group(1) or m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if not first:
            specs.append((None, _num(last)))
            continue
        spec = (_num(first), _num(last) if last else None)
        if spec[1] is not None and spec[1] < spec[0]:
            return None
        specs.append(spec)
    return specs or None


def satisfiable(specs: list[Spec], length: int) -> list[ByteRange]:
    """The satisfiable range-specs as byte ranges over ``length`` bytes, in request order."""
    out: list[ByteRange] = []
    for first, last in specs:
        if first is None:  # suffix
            assert last is not None
            if last > 0:
                out.append(ByteRange(max(length - last, 0), length - 1))
        elif first < length:
            out.append(ByteRange(first, length - 1 if last is None else min(last, length - 1)))
    return out


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.first):
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = ByteRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def if_range_holds(values: tuple[str, ...], stored: Headers) -> bool:
    """§13.1.5: does the If-Range field (its lines) let Range apply to the stored response?"""
    if len(values) != 1:
        return False
    value = values[0].strip()
    if value.startswith(('"', "W/")):
        tag = parse_etag(value)
        return tag is not None and not tag[0] and etag_strong_match(value,
                                                                   get_first(stored, "etag"))
    when = parse_http_date(value)
    modified = parse_http_date(get_first(stored, "last-modified"))
    date = parse_http_date(get_first(stored, "date"))
    return (when is not None and modified is not None and date is not None
            and when == modified and date - modified >= 1)


def _accepts_ranges(stored: Headers) -> bool:
    units = {u.lower() for v in get_all(stored, "accept-ranges") for u in split_list(v)}
    return "none" not in units


def decide(method: str, request_headers: Headers, status: int, stored: Headers,
           length: int) -> RangeDecision:
    """What to send for this request from a stored response of ``length`` body bytes."""
    lines = get_all(request_headers, "range")
    if method != "GET" or not lines or status != 200 or not _accepts_ranges(stored):
        return RangeDecision(RangeKind.FULL, reason="not-applicable")
    specs = parse_range_set(lines[0]) if len(lines) == 1 else None
    if specs is None:
        return RangeDecision(RangeKind.FULL, reason="invalid")
    if len(specs) > MAX_RANGES:
        return RangeDecision(RangeKind.FULL, reason="too-many-ranges")
    if_range = get_all(request_headers, "if-range")
    if if_range and not if_range_holds(if_range, stored):
        return RangeDecision(RangeKind.FULL, reason="if-range")
    if length == 0:
        return RangeDecision(RangeKind.FULL, reason="empty")
    ranges = satisfiable(specs, length)
    if not ranges:
        return RangeDecision(RangeKind.UNSATISFIABLE)
    if sum(r.length for r in ranges) > length:
        return RangeDecision(RangeKind.FULL, reason="overlapping-ranges")
    return RangeDecision(RangeKind.PARTIAL, _coalesce(ranges))
