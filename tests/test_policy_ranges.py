"""edge.policy.ranges: Range and If-Range against a stored response, as tables (no clock)."""

from __future__ import annotations

import pytest

from edge.policy.ranges import (
    MAX_RANGES,
    ByteRange,
    RangeKind,
    decide,
    if_range_holds,
    parse_range_set,
)
from geoconfig.httpdate import format_http_date

T = 1_750_000_000.0
LM = format_http_date(T - 86400)
STORED = (("Date", format_http_date(T)), ("Last-Modified", LM), ("ETag", '"v1"'),
          ("Content-Type", "text/plain"))
FULL, PARTIAL, NONE = RangeKind.FULL, RangeKind.PARTIAL, RangeKind.UNSATISFIABLE
B = ByteRange

PARSE = {
    "closed": ("bytes=0-499", [(0, 499)]),
    "open": ("bytes=500-", [(500, None)]),
    "suffix": ("bytes=-500", [(None, 500)]),
    "unit case-insensitive": ("BYTES=1-2", [(1, 2)]),
    "several, OWS and empty elements": ("bytes=0-1 , ,\t5-6,", [(0, 1), (5, 6)]),
    "first == last": ("bytes=7-7", [(7, 7)]),
    "huge number capped": ("bytes=" + "9" * 5000 + "-", [(10**18, None)]),
    "leading zeros": ("bytes=007-010", [(7, 10)]),
    "other unit": ("items=0-1", None),
    "no =": ("bytes 0-1", None),
    "space before =": ("bytes =0-1", None),
    "last < first": ("bytes=5-4", None),
    "one invalid spoils all": ("bytes=0-1,5-4", None),
    "lone dash": ("bytes=-", None),
    "sign": ("bytes=+1-2", None),
    "space inside": ("bytes=0 - 1", None),
    "empty set": ("bytes=", None),
    "only commas": ("bytes=,,", None),
    "letters": ("bytes=a-b", None),
}


@pytest.mark.parametrize("value, expected", PARSE.values(), ids=PARSE.keys())
def test_parse_range_set(value, expected):
    assert parse_range_set(value) == expected


IF_RANGE = {
    "strong tag matches": (('"v1"',), STORED, True),
    "other tag": (('"v2"',), STORED, False),
    "weak tag never": (('W/"v1"',), STORED, False),
    "strong tag vs weak stored": (('"v1"',), (("ETag", 'W/"v1"'),), False),
    "no stored tag": (('"v1"',), (("Date", format_http_date(T)),), False),
    "date == Last-Modified, Date later": ((LM,), STORED, True),
    "date in another format, same instant": (
        ("Saturday, 14-Jun-25 15:06:40 GMT",),
        (("Date", format_http_date(1749913600 + 10)), ("Last-Modified",
                                                        format_http_date(1749913600))), True),
    "date != Last-Modified": ((format_http_date(T - 86399),), STORED, False),
    "Last-Modified not strong: Date equal": (
        (LM,), (("Date", LM), ("Last-Modified", LM)), False),
    "Last-Modified exactly 1 s before Date": (
        (LM,), (("Date", format_http_date(T - 86399)), ("Last-Modified", LM)), True),
    "no stored Date": ((LM,), (("Last-Modified", LM),), False),
    "no Last-Modified": ((LM,), (("Date", LM),), False),
    "invalid date": (("yesterday",), STORED, False),
    "two lines": (('"v1"', '"v1"'), STORED, False),
}


@pytest.mark.parametrize("values, stored, expected", IF_RANGE.values(), ids=IF_RANGE.keys())
def test_if_range(values, stored, expected):
    assert if_range_holds(values, stored) is expected


def req(*headers: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return headers


def rng(value: str) -> tuple[str, str]:
    return ("Range", value)


# (method, request headers, stored status, stored headers, length, kind, ranges, reason)
DECIDE = {
    "single": ("GET", req(rng("bytes=0-9")), 200, STORED, 100, PARTIAL, (B(0, 9),), ""),
    "open": ("GET", req(rng("bytes=90-")), 200, STORED, 100, PARTIAL, (B(90, 99),), ""),
    "suffix": ("GET", req(rng("bytes=-10")), 200, STORED, 100, PARTIAL, (B(90, 99),), ""),
    "suffix longer than body": ("GET", req(rng("bytes=-500")), 200, STORED, 100, PARTIAL,
                                (B(0, 99),), ""),
    "last clipped": ("GET", req(rng("bytes=50-5000")), 200, STORED, 100, PARTIAL,
                     (B(50, 99),), ""),
    "whole as a range": ("GET", req(rng("bytes=0-")), 200, STORED, 100, PARTIAL,
                         (B(0, 99),), ""),
    "two ranges": ("GET", req(rng("bytes=0-9,50-59")), 200, STORED, 100, PARTIAL,
                   (B(0, 9), B(50, 59)), ""),
    "out of order, sorted": ("GET", req(rng("bytes=50-59,0-9")), 200, STORED, 100, PARTIAL,
                             (B(0, 9), B(50, 59)), ""),
    "overlap coalesced": ("GET", req(rng("bytes=0-9,5-19")), 200, STORED, 100, PARTIAL,
                          (B(0, 19),), ""),
    "adjacent coalesced": ("GET", req(rng("bytes=0-9,10-19,30-39")), 200, STORED, 100,
                           PARTIAL, (B(0, 19), B(30, 39)), ""),
    "unsatisfiable dropped from a set": ("GET", req(rng("bytes=0-9,500-600")), 200, STORED,
                                         100, PARTIAL, (B(0, 9),), ""),
    "first past the end": ("GET", req(rng("bytes=100-")), 200, STORED, 100, NONE, (), ""),
    "suffix of zero": ("GET", req(rng("bytes=-0")), 200, STORED, 100, NONE, (), ""),
    "none satisfiable": ("GET", req(rng("bytes=200-300,400-")), 200, STORED, 100, NONE, (),
                         ""),
    "huge first": ("GET", req(rng("bytes=" + "9" * 30 + "-")), 200, STORED, 100, NONE, (),
                   ""),
    "empty body": ("GET", req(rng("bytes=-5")), 200, STORED, 0, FULL, (), "empty"),
    "HEAD ignores Range": ("HEAD", req(rng("bytes=0-9")), 200, STORED, 100, FULL, (),
                           "not-applicable"),
    "no Range": ("GET", req(), 200, STORED, 100, FULL, (), "not-applicable"),
    "stored 404": ("GET", req(rng("bytes=0-9")), 404, STORED, 100, FULL, (), "not-applicable"),
    "Accept-Ranges: none": ("GET", req(rng("bytes=0-9")), 200,
                            (*STORED, ("Accept-Ranges", "none")), 100, FULL, (),
                            "not-applicable"),
    "Accept-Ranges: bytes": ("GET", req(rng("bytes=0-9")), 200,
                             (*STORED, ("Accept-Ranges", "bytes")), 100, PARTIAL,
                             (B(0, 9),), ""),
    "invalid syntax ignored": ("GET", req(rng("bytes=9-0")), 200, STORED, 100, FULL, (),
                               "invalid"),
    "other unit ignored": ("GET", req(rng("lines=0-9")), 200, STORED, 100, FULL, (),
                           "invalid"),
    "two Range lines ignored": ("GET", req(rng("bytes=0-1"), rng("bytes=2-3")), 200, STORED,
                                100, FULL, (), "invalid"),
    "max ranges": ("GET", req(rng("bytes=" + ",".join(f"{i * 2}-{i * 2}"
                                                         for i in range(MAX_RANGES)))),
                   200, STORED, 100, PARTIAL, tuple(B(i * 2, i * 2) for i in range(MAX_RANGES)),
                   ""),
    "too many ranges": ("GET", req(rng("bytes=" + ",".join(f"{i * 2}-{i * 2}"
                                                              for i in range(MAX_RANGES + 1)))),
                        200, STORED, 100, FULL, (), "too-many-ranges"),
    "overlaps past the length": ("GET", req(rng("bytes=0-,0-,0-")), 200, STORED, 100, FULL, (),
                                 "overlapping-ranges"),
    "overlaps within the length": ("GET", req(rng("bytes=0-29,10-39")), 200, STORED, 100,
                                   PARTIAL, (B(0, 39),), ""),
    "If-Range tag holds": ("GET", req(rng("bytes=0-9"), ("If-Range", '"v1"')), 200, STORED,
                           100, PARTIAL, (B(0, 9),), ""),
    "If-Range tag changed": ("GET", req(rng("bytes=0-9"), ("If-Range", '"v0"')), 200, STORED,
                             100, FULL, (), "if-range"),
    "If-Range date holds": ("GET", req(rng("bytes=0-9"), ("If-Range", LM)), 200, STORED, 100,
                            PARTIAL, (B(0, 9),), ""),
    "If-Range checked before satisfiability": ("GET", req(rng("bytes=500-"),
                                                          ("If-Range", '"v0"')),
                                               200, STORED, 100, FULL, (), "if-range"),
    "If-Range without Range": ("GET", req(("If-Range", '"v0"')), 200, STORED, 100, FULL, (),
                               "not-applicable"),
}


@pytest.mark.parametrize("method, headers, status, stored, length, kind, ranges, reason",
                         DECIDE.values(), ids=DECIDE.keys())
def test_decide(method, headers, status, stored, length, kind, ranges, reason):
    d = decide(method, headers, status, stored, length)
    assert (d.kind, d.ranges, d.reason) == (kind, ranges, reason)


def test_content_range():
    assert B(0, 9).content_range(100) == "bytes 0-9/100"
    assert B(0, 9).length == 10
