"""Byte-range requests (RFC 9110 §14): parse a Range header against a representation length.

Pure: ``parse_range(header, length)`` looks at nothing but its arguments.

Rules:

* Only the ``bytes`` unit is understood (case-insensitively, §14.1). Another unit, a missing
  ``=``, a range-spec that is not ``first-last``, ``first-`` or ``-suffix`` with decimal
  digits, ``last < first`` (§14.1.1), no range-spec at all or more than ``MAX_RANGES`` of them
  makes the whole header *invalid*: it is IGNORED and the full representation is sent (200).
  Empty list elements and whitespace around commas are tolerated (§5.6.1).
* Satisfiable (§14.1.1): ``first-`` and ``first-last`` when ``first < length``;
  ``-suffix`` when ``suffix > 0`` (a suffix longer than the representation means all of it).
  ``last`` beyond the end is clipped to ``length - 1``.
* No satisfiable range-spec -> UNSATISFIABLE (416 with ``Content-Range: bytes */length``).
* Multiple ranges: we never send multipart/byteranges. The satisfiable ranges are coalesced
  (overlapping or adjacent ones merged, as §14.2 allows); if that leaves exactly one range it is
  sent as a single-part 206, otherwise the Range header is IGNORED and the whole representation
  is sent with 200 (a server MAY ignore Range, §14.2).
* A zero-length representation: int-ranges are unsatisfiable; a suffix range is satisfiable in
  principle but a 206 cannot describe zero bytes, so the header is IGNORED (200, empty body).
* Whether Range applies at all (GET only, If-Range) is decided by ``conditional.select``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["MAX_RANGES", "ByteRange", "RangeKind", "RangeResult", "parse_range",
           "unsatisfied_content_range"]

MAX_RANGES = 100
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_HUGE = 10**18  # any position with more digits than this is "beyond every representation"


def _num(digits: str) -> int:
    """A decimal position; huge values are capped (int() refuses > 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > 18 else int(digits)


class RangeKind(enum.Enum):
    IGNORE = "ignore"  # send the full representation, 200
    PARTIAL = "partial"  # send ``RangeResult.range``, 206
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int  # first byte offset
    end: int  # last byte offset, inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


@dataclass(frozen=True, slots=True)
class RangeResult:
    kind: RangeKind
    range: ByteRange | None = None


IGNORE = RangeResult(RangeKind.IGNORE)
UNSATISFIABLE = RangeResult(RangeKind.UNSATISFIABLE)


def unsatisfied_content_range(total: int) -> str:
    return f"bytes */{total}"


def _specs(header: str) -> list[tuple[str, str]] | None:
    unit, eq, rest = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = []
    for item in rest.split(","):
        item = item.strip(" \t")
        if not item:
            continue
        m = _SPEC.fullmatch(item)
        if m is None or not (m[1] or m[2]):
            return None
        if m[1] and m[2] and _num(m[2]) < _num(m[1]):
            return None
        specs.append((m[1], m[2]))
    if not specs or len(specs) > MAX_RANGES:
        return None
    return specs


def _coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    merged: list[ByteRange] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1].end + 1:
            last = merged[-1]
            merged[-1] = ByteRange(last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return merged


def parse_range(header: str | None, length: int) -> RangeResult:
    """What to send for a Range ``header`` on a representation of ``length`` bytes."""
    if header is None:
        return IGNORE
    specs = _specs(header)
    if specs is None:
        return IGNORE
    satisfiable: list[ByteRange] = []
    suffix_on_empty = False
    for first, last in specs:
        if not first:  # -suffix
            suffix = _num(last)
            if suffix == 0:
                continue
            if length == 0:
                suffix_on_empty = True
                continue
            satisfiable.append(ByteRange(max(0, length - suffix), length - 1))
        elif _num(first) < length:
            end = length - 1 if not last else min(_num(last), length - 1)
            satisfiable.append(ByteRange(_num(first), end))
    if not satisfiable:
        return IGNORE if suffix_on_empty else UNSATISFIABLE
    merged = _coalesce(satisfiable)
    if len(merged) > 1:
        return IGNORE
    return RangeResult(RangeKind.PARTIAL, merged[0])
