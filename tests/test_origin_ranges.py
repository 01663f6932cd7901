"""Pure table for origin/ranges.py (RFC 9110 §14) plus properties over arbitrary headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from origin.ranges import (
    MAX_RANGES,
    ByteRange,
    RangeKind,
    RangeResult,
    parse_range,
    unsatisfied_content_range,
)

IGNORE = RangeResult(RangeKind.IGNORE)
UNSAT = RangeResult(RangeKind.UNSATISFIABLE)


def R(start: int, end: int) -> RangeResult:
    return RangeResult(RangeKind.PARTIAL, ByteRange(start, end))


TABLE = [
    # (header, length, expected)
    (None, 1000, IGNORE),
    ("bytes=0-499", 1000, R(0, 499)),
    ("bytes=500-999", 1000, R(500, 999)),
    ("bytes=500-", 1000, R(500, 999)),
    ("bytes=-500", 1000, R(500, 999)),
    ("bytes=-2000", 1000, R(0, 999)),
    ("bytes=0-0", 1000, R(0, 0)),
    ("bytes=999-", 1000, R(999, 999)),
    ("bytes=0-5000", 1000, R(0, 999)),
    ("bytes=-1", 1, R(0, 0)),
    ("BYTES=0-1", 1000, R(0, 1)),
    ("bytes= 0-1", 1000, R(0, 1)),
    ("bytes=0-1,,", 1000, R(0, 1)),
    ("bytes=000-009", 1000, R(0, 9)),
    ("bytes=1000-", 1000, UNSAT),
    ("bytes=1000-2000", 1000, UNSAT),
    ("bytes=-0", 1000, UNSAT),
    ("bytes=2000-, 3000-", 1000, UNSAT),
    ("bytes=" + "9" * 5000 + "-", 1000, UNSAT),
    ("bytes=0-" + "9" * 5000, 1000, R(0, 999)),
    ("bytes=-" + "9" * 5000, 1000, R(0, 999)),
    ("bytes=5-2", 1000, IGNORE),
    ("bytes=abc", 1000, IGNORE),
    ("bytes=", 1000, IGNORE),
    ("bytes=-", 1000, IGNORE),
    ("bytes=,", 1000, IGNORE),
    ("bytes 0-1", 1000, IGNORE),
    ("items=0-1", 1000, IGNORE),
    ("0-1", 1000, IGNORE),
    ("bytes=0-1;x", 1000, IGNORE),
    ("bytes=+1-2", 1000, IGNORE),
    ("bytes=1--2", 1000, IGNORE),
    ("bytes=\u0661-\u0662", 1000, IGNORE),  # Arabic-Indic digits are not DIGIT
    ("bytes=0-1,5-9,x", 1000, IGNORE),  # one bad spec spoils the header
    # multiple ranges: coalesced to one, or ignored
    ("bytes=0-1,4-5", 1000, IGNORE),
    ("bytes=0-4,5-9", 1000, R(0, 9)),
    ("bytes=0-5,3-9", 1000, R(0, 9)),
    ("bytes=5-9,0-5", 1000, R(0, 9)),
    ("bytes=0-9, 2000-3000", 1000, R(0, 9)),
    ("bytes=-10,990-", 1000, R(990, 999)),
    ("bytes=" + ",".join(["0-1"] * MAX_RANGES), 1000, R(0, 1)),
    ("bytes=" + ",".join(["0-1"] * (MAX_RANGES + 1)), 1000, IGNORE),
    # zero-length representations
    ("bytes=0-", 0, UNSAT),
    ("bytes=0-0", 0, UNSAT),
    ("bytes=-5", 0, IGNORE),
]


@pytest.mark.parametrize(("header", "length", "expected"), TABLE,
                         ids=[f"{h!s:.40}/{n}" for h, n, _ in TABLE])
def test_parse_range(header: str | None, length: int, expected: RangeResult) -> None:
    assert parse_range(header, length) == expected


def test_content_range_strings() -> None:
    assert ByteRange(0, 9).content_range(100) == "bytes 0-9/100"
    assert ByteRange(0, 9).length == 10
    assert unsatisfied_content_range(100) == "bytes */100"


@given(st.text(max_size=60), st.integers(min_value=0, max_value=10_000))
def test_any_header_yields_a_range_inside_the_representation(header: str, length: int) -> None:
    result = parse_range(header, length)
    if result.kind is RangeKind.PARTIAL:
        assert result.range is not None
        assert 0 <= result.range.start <= result.range.end < length
    else:
        assert result.range is None


@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=300),
       st.integers(min_value=1, max_value=200))
def test_int_range_matches_slicing(first: int, last: int, length: int) -> None:
    data = bytes(range(256)) * 2
    data = data[:length]
    result = parse_range(f"bytes={first}-{last}", length)
    if last < first:
        assert result.kind is RangeKind.IGNORE
    elif first >= length:
        assert result.kind is RangeKind.UNSATISFIABLE
    else:
        assert result.range is not None
        r = result.range
        assert data[r.start:r.end + 1] == data[first:last + 1]


@given(st.integers(min_value=1, max_value=300), st.integers(min_value=1, max_value=200))
def test_suffix_range_is_the_tail(suffix: int, length: int) -> None:
    result = parse_range(f"bytes=-{suffix}", length)
    assert result.range is not None
    data = bytes(range(200))[:length]
    assert data[result.range.start:result.range.end + 1] == data[-suffix:]
