"""Pure tables for origin/conditional.py: entity tags, RFC 9110 §13.2.2 precedence, If-Range."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from geoconfig.httpdate import format_http_date
from origin.conditional import (
    Conditions,
    Decision,
    EntityTag,
    Outcome,
    Validators,
    if_range_holds,
    parse_etag,
    parse_etag_list,
    preconditions,
    select,
)
from origin.ranges import ByteRange

LM = 1_700_000_000
NOW = LM + 100
CUR = Validators('"abc"', LM)
D = format_http_date
P, N, F = Outcome.PROCEED, Outcome.NOT_MODIFIED, Outcome.PRECONDITION_FAILED


def C(**kw: object) -> Conditions:
    for key in ("if_modified_since", "if_unmodified_since", "if_range", "range"):
        if isinstance(kw.get(key), str):
            kw[key] = (kw[key],)
    return Conditions(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ('"abc"', EntityTag('"abc"')),
    ('W/"abc"', EntityTag('"abc"', weak=True)),
    ('  "abc" ', EntityTag('"abc"')),
    ('""', EntityTag('""')),
    ("abc", None),
    ('"a"b"', None),
    ('w/"abc"', None),  # the weak prefix is case-sensitive
    ('"abc', None),
])
def test_parse_etag(text: str, expected: EntityTag | None) -> None:
    assert parse_etag(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('"a", W/"b"', ['"a"', 'W/"b"']),
    ('"a",W/"b"', ['"a"', 'W/"b"']),
    (' , "a" ,, ', ['"a"']),
    ("", []),
    ('"a" "b"', None),
    ('"a", b', None),
    ('"a", *', None),
])
def test_parse_etag_list(text: str, expected: list[str] | None) -> None:
    tags = parse_etag_list(text)
    assert (None if tags is None else [str(t) for t in tags]) == expected


PRECONDITIONS = [
    # (case, method, conditions, outcome)
    ("none", "GET", C(), P),
    ("if-match same", "GET", C(if_match='"abc"'), P),
    ("if-match other", "GET", C(if_match='"xyz"'), F),
    ("if-match weak never matches", "GET", C(if_match='W/"abc"'), F),
    ("if-match star", "GET", C(if_match="*"), P),
    ("if-match list", "GET", C(if_match='"xyz", "abc"'), P),
    ("if-match malformed", "GET", C(if_match="abc"), F),
    ("ius at lm", "GET", C(if_unmodified_since=D(LM)), P),
    ("ius later", "GET", C(if_unmodified_since=D(LM + 60)), P),
    ("ius earlier", "GET", C(if_unmodified_since=D(LM - 1)), F),
    ("ius invalid ignored", "GET", C(if_unmodified_since="yesterday"), P),
    ("ius two lines ignored", "GET", C(if_unmodified_since=(D(LM - 1), D(LM - 1))), P),
    ("ius ignored with if-match", "GET", C(if_match='"abc"', if_unmodified_since=D(LM - 1)), P),
    ("inm same", "GET", C(if_none_match='"abc"'), N),
    ("inm weak compares weakly", "GET", C(if_none_match='W/"abc"'), N),
    ("inm star", "GET", C(if_none_match="*"), N),
    ("inm other", "GET", C(if_none_match='"xyz"'), P),
    ("inm in list", "GET", C(if_none_match='"xyz", W/"abc"'), N),
    ("inm empty elements", "GET", C(if_none_match=' , "abc" ,'), N),
    ("inm malformed", "GET", C(if_none_match="abc"), P),
    ("inm head", "HEAD", C(if_none_match='"abc"'), N),
    ("inm post", "POST", C(if_none_match='"abc"'), F),
    ("inm put star", "PUT", C(if_none_match="*"), F),
    ("ims at lm", "GET", C(if_modified_since=D(LM)), N),
    ("ims later", "GET", C(if_modified_since=D(LM + 1)), N),
    ("ims future is still a date (RFC 9110)", "GET", C(if_modified_since=D(NOW + 3600)), N),
    ("ims earlier", "GET", C(if_modified_since=D(LM - 1)), P),
    ("ims invalid", "GET", C(if_modified_since="not a date"), P),
    ("ims numeric offset invalid", "GET", C(if_modified_since="Tue, 14 Nov 2023 22:13:20 +0000"),
     P),
    ("ims list invalid", "GET", C(if_modified_since=f"{D(LM)}, {D(LM)}"), P),
    ("ims two lines", "GET", C(if_modified_since=(D(LM), D(LM))), P),
    ("ims rfc850", "GET", C(if_modified_since="Tuesday, 14-Nov-23 22:13:20 GMT"), N),
    ("ims asctime", "GET", C(if_modified_since="Tue Nov 14 22:13:20 2023"), N),
    ("ims head", "HEAD", C(if_modified_since=D(LM)), N),
    ("ims post ignored", "POST", C(if_modified_since=D(LM)), P),
    ("ims ignored with inm", "GET", C(if_none_match='"xyz"', if_modified_since=D(LM)), P),
    ("if-match before inm", "GET", C(if_match='"xyz"', if_none_match='"abc"'), F),
    ("ius before inm", "GET", C(if_unmodified_since=D(LM - 1), if_none_match='"abc"'), F),
    ("if-match then inm", "GET", C(if_match='"abc"', if_none_match='"abc"'), N),
    ("if-match then ims", "GET", C(if_match="*", if_modified_since=D(LM)), N),
]


@pytest.mark.parametrize(("method", "cond", "expected"), [c[1:] for c in PRECONDITIONS],
                         ids=[c[0] for c in PRECONDITIONS])
def test_preconditions(method: str, cond: Conditions, expected: Outcome) -> None:
    assert preconditions(method, cond, CUR, NOW) is expected


def test_if_match_needs_a_strong_current_tag() -> None:
    assert preconditions("GET", C(if_match='"abc"'), Validators('W/"abc"', LM), NOW) is F
    assert preconditions("GET", C(if_none_match='"abc"'), Validators('W/"abc"', LM), NOW) is N


@pytest.mark.parametrize(("value", "now", "expected"), [
    ('"abc"', NOW, True),
    ('W/"abc"', NOW, False),
    ('"xyz"', NOW, False),
    (D(LM), NOW, True),
    (D(LM), LM + 0.5, False),  # Last-Modified not yet a strong validator
    (D(LM - 1), NOW, False),
    (D(LM + 1), NOW, False),  # a date must match exactly
    ("garbage", NOW, False),
])
def test_if_range(value: str, now: float, expected: bool) -> None:
    assert if_range_holds(value, CUR, now) is expected


SELECT = [
    ("plain", "GET", C(), Decision(200)),
    ("range", "GET", C(range="bytes=0-9"), Decision(206, ByteRange(0, 9))),
    ("range on head ignored", "HEAD", C(range="bytes=0-9"), Decision(200)),
    ("range on post ignored", "POST", C(range="bytes=0-9"), Decision(200)),
    ("unsatisfiable", "GET", C(range="bytes=100-"), Decision(416)),
    ("invalid range ignored", "GET", C(range="bytes=9-0"), Decision(200)),
    ("two range lines ignored", "GET", C(range=("bytes=0-1", "bytes=2-3")), Decision(200)),
    ("if-range etag holds", "GET", C(range="bytes=-5", if_range='"abc"'),
     Decision(206, ByteRange(95, 99))),
    ("if-range date holds", "GET", C(range="bytes=1-2", if_range=D(LM)),
     Decision(206, ByteRange(1, 2))),
    ("if-range fails: full", "GET", C(range="bytes=0-9", if_range='"xyz"'), Decision(200)),
    ("if-range fails beats 416", "GET", C(range="bytes=500-", if_range='"xyz"'), Decision(200)),
    ("if-range weak: full", "GET", C(range="bytes=0-9", if_range='W/"abc"'), Decision(200)),
    ("if-range without range", "GET", C(if_range='"abc"'), Decision(200)),
    ("304 beats range", "GET", C(range="bytes=0-9", if_none_match='"abc"'), Decision(304)),
    ("412 beats range", "GET", C(range="bytes=0-9", if_match='"xyz"'), Decision(412)),
    ("412 beats 416", "GET", C(range="bytes=500-", if_match='"xyz"'), Decision(412)),
    ("head 304", "HEAD", C(if_none_match="*"), Decision(304)),
]


@pytest.mark.parametrize(("method", "cond", "expected"), [c[1:] for c in SELECT],
                         ids=[c[0] for c in SELECT])
def test_select(method: str, cond: Conditions, expected: Decision) -> None:
    assert select(method, cond, CUR, 100, NOW) == expected


def test_conditions_from_headers_joins_lists_and_keeps_date_lines() -> None:
    headers = CIMultiDict([("If-None-Match", '"a"'), ("if-none-match", '"b"'),
                           ("If-Modified-Since", D(LM)), ("If-Modified-Since", D(LM)),
                           ("Range", "bytes=0-1")])
    cond = Conditions.from_headers(headers)
    assert cond.if_none_match == '"a", "b"'
    assert cond.if_match is None
    assert cond.if_modified_since == (D(LM), D(LM))
    assert cond.range == ("bytes=0-1",)
    assert cond.if_range == ()
