"""Validators, HTTP-dates and freshening with 304 (RFC 9110 §5.6.7, §8.8; RFC 9111 §4.3.4)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy.config import PolicyConfig
from edge.policy.freshness import StoredMeta, current_age, stored_lifetime
from edge.policy.validation import (
    etag_strong_match,
    etag_weak_match,
    format_http_date,
    freshen_on_304,
    parse_etag,
    parse_http_date,
)

# RFC 9110 §8.8.3.2 comparison table: (ETag 1, ETag 2, strong, weak)
ETAG_TABLE = [
    ('W/"1"', 'W/"1"', False, True),
    ('W/"1"', 'W/"2"', False, False),
    ('W/"1"', '"1"', False, True),
    ('"1"', '"1"', True, True),
    # beyond the RFC table
    ('"1"', '"2"', False, False),
    ('"xyzzy"', ' "xyzzy" ', True, True),
    ('w/"1"', '"1"', False, False),  # "W/" is case-sensitive: w/"1" is not an opaque-tag "1"
    ("abc", "abc", True, True),  # unquoted (invalid but common): opaque string
    ('""', '""', True, True),
    (None, '"1"', False, False),
    ('"1"', "", False, False),
]


@pytest.mark.parametrize(("a", "b", "strong", "weak"), ETAG_TABLE)
def test_etag_comparison(a, b, strong, weak):
    assert etag_strong_match(a, b) is strong
    assert etag_strong_match(b, a) is strong
    assert etag_weak_match(a, b) is weak
    assert etag_weak_match(b, a) is weak


def test_parse_etag():
    assert parse_etag('W/"a"') == (True, "a")
    assert parse_etag('"a"') == (False, "a")
    assert parse_etag('"a') is None
    assert parse_etag("") is None


RFC_EXAMPLE_TS = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate (RFC 9110 §5.6.7 example)
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850 format
        "Sun Nov  6 08:49:37 1994",  # ANSI C asctime() format
        "  Sun, 06 Nov 1994 08:49:37 GMT ",
        "Mon, 06 Nov 1994 08:49:37 GMT",  # wrong weekday tolerated
    ],
)
def test_parse_http_date_formats(value):
    assert parse_http_date(value) == RFC_EXAMPLE_TS


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0",
        "-1",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT junk",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov  6 08:49:37 94",
        "Sun, 06 Nov 1994 08:49:37 GMT\u00e9",
        "1700000000",
        "sun, 06 nov 1994 08:49:37 gmt",  # the grammar is case-sensitive
        "Sun,  06 Nov 1994 08:49:37 GMT",  # runs of spaces
        "Thu, 18  Aug  2050 02:01:18 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun,\t06 Nov 1994 08:49:37 GMT",
    ],
)
def test_parse_http_date_invalid(value):
    assert parse_http_date(value) is None


def test_leap_second_and_leap_day():
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT") == 1483228800.0
    assert parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT") == 1709164800.0
    assert parse_http_date("Thu, 29 Feb 2023 00:00:00 GMT") is None


NOW_2024 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        # §5.6.7: more than 50 years in the future -> previous century
        ("Thursday, 01-Jan-70 00:00:00 GMT", NOW_2024, 3155760000.0),  # 2070: 46 years ahead
        ("Tuesday, 01-Jan-30 00:00:00 GMT", NOW_2024, 1893456000.0),  # 2030
        ("Monday, 01-Jan-74 00:00:00 GMT", NOW_2024, 3281990400.0),  # 2074: 50 years, not more
        ("Monday, 02-Jan-74 00:00:00 GMT", NOW_2024, 126316800.0),  # 1974: > 50 years ahead
        ("Tuesday, 01-Jan-75 00:00:00 GMT", NOW_2024, 157766400.0),  # 1975
        ("Friday, 01-Jan-99 00:00:00 GMT", NOW_2024, 915148800.0),  # 1999
        ("Thursday, 01-Jan-70 00:00:00 GMT", None, 0.0),  # POSIX pivot without now
        ("Monday, 01-Jan-68 00:00:00 GMT", None, 3092601600.0),  # 2068
    ],
)
def test_rfc850_two_digit_years(value, now, expected):
    assert parse_http_date(value, now) == expected


def test_format_http_date():
    assert format_http_date(RFC_EXAMPLE_TS) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(RFC_EXAMPLE_TS + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@given(st.integers(0, 253402300799))  # up to 9999-12-31T23:59:59Z
def test_format_parse_round_trip(ts):
    assert parse_http_date(format_http_date(ts)) == float(ts)


@given(st.text())
def test_parse_http_date_never_raises(text):
    parse_http_date(text)
    parse_http_date(text, now=NOW_2024)


T0 = 1_700_000_000.0
D0 = format_http_date(T0)


def stored(*headers):
    base = (
        ("Date", D0),
        ("Cache-Control", "max-age=60"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("Content-Encoding", "gzip"),
        ("Age", "30"),
    )
    return StoredMeta(200, (*base, *headers), T0 - 1, T0, "GET", "vk")


# (stored validators, 304 validators, selected?)  -- RFC 9111 §4.3.4
SELECTION_CASES = [
    ((("ETag", '"a"'),), (("ETag", '"a"'),), True),
    ((("ETag", '"a"'),), (("ETag", '"b"'),), False),
    ((("ETag", 'W/"a"'),), (("ETag", '"a"'),), False),  # strong tag needs a strong match
    ((("ETag", '"a"'),), (("ETag", 'W/"a"'),), True),  # weak tag: weak comparison
    ((("ETag", 'W/"a"'),), (("ETag", 'W/"a"'),), True),
    ((("ETag", '"a"'), ("Last-Modified", D0)), (("Last-Modified", D0),), True),
    ((("Last-Modified", D0),), (("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"),), True),
    ((("Last-Modified", D0),), (("Last-Modified", format_http_date(T0 + 1)),), False),
    ((("Last-Modified", D0),), (("Last-Modified", "bogus"),), False),
    ((), (), True),  # neither side has a validator
    ((("ETag", '"a"'),), (), False),  # 304 without validator cannot update a validated one
    ((), (("ETag", '"a"'),), False),
]


@pytest.mark.parametrize(("old", "new", "selected"), SELECTION_CASES)
def test_freshen_selection(old, new, selected):
    result = freshen_on_304(stored(*old), (("Date", D0), *new), T0 + 100, T0 + 101)
    assert (result is not None) is selected


def test_freshen_updates_headers_per_rfc9111_3_2():
    s = stored(("ETag", '"v1"'), ("X-Old", "keep"))
    response_304 = (
        ("Date", format_http_date(T0 + 101)),
        ("ETag", '"v1"'),
        ("Cache-Control", "max-age=120"),
        ("Content-Length", "0"),  # never updated (§3.2)
        ("Content-Encoding", "br"),  # integrity of the stored body
        ("Content-Type", "text/html"),  # may be updated
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("X-New", "n"),
        ("Set-Cookie", "a=1"),  # not stored by default
    )
    fresh = freshen_on_304(s, response_304, T0 + 100, T0 + 101)
    assert fresh is not None
    assert fresh.headers == (
        ("Date", format_http_date(T0 + 101)),
        ("Cache-Control", "max-age=120"),
        ("Content-Type", "text/html"),
        ("Content-Length", "5"),
        ("Content-Encoding", "gzip"),
        ("ETag", '"v1"'),
        ("X-Old", "keep"),
        ("X-New", "n"),
    )
    assert (fresh.status, fresh.request_time, fresh.response_time) == (200, T0 + 100, T0 + 101)
    assert (fresh.request_method, fresh.vary_key) == ("GET", "vk")
    assert stored_lifetime(fresh) == 120.0
    assert current_age(fresh, T0 + 111) == 11.0  # delay 1 + resident 10; old Age dropped


def test_freshen_keeps_age_from_304_and_adds_missing_date():
    s = stored(("ETag", '"v1"'))
    fresh = freshen_on_304(s, (("ETag", '"v1"'), ("Age", "7")), T0 + 100, T0 + 102)
    assert fresh is not None
    assert ("Date", format_http_date(T0 + 102)) in fresh.headers
    assert ("Age", "7") in fresh.headers
    assert current_age(fresh, T0 + 102) == 9.0  # Age 7 + response_delay 2


def test_freshen_strips_newly_qualified_private_fields():
    s = stored(("ETag", '"v1"'), ("X-User", "alice"))
    response_304 = (("ETag", '"v1"'), ("Cache-Control", 'max-age=60, private="X-User"'))
    fresh = freshen_on_304(s, response_304, T0 + 1, T0 + 1)
    assert fresh is not None
    assert all(name.lower() != "x-user" for name, _ in fresh.headers)


def test_freshen_set_cookie_kept_when_configured_and_public():
    s = stored(("ETag", '"v1"'), ("Cache-Control", "public, max-age=60"))
    cfg = PolicyConfig(store_set_cookie=True)
    fresh = freshen_on_304(s, (("ETag", '"v1"'), ("Set-Cookie", "a=1")), T0, T0, cfg)
    assert fresh is not None and ("Set-Cookie", "a=1") in fresh.headers
    private = stored(("ETag", '"v1"'), ("Cache-Control", "max-age=60"))
    fresh = freshen_on_304(private, (("ETag", '"v1"'), ("Set-Cookie", "a=1")), T0, T0, cfg)
    assert fresh is not None and ("Set-Cookie", "a=1") not in fresh.headers


def test_freshen_replaces_every_line_of_a_repeated_field():
    s = stored(("ETag", '"v1"'), ("Link", "<a>"), ("Link", "<b>"))
    fresh = freshen_on_304(s, (("ETag", '"v1"'), ("link", "<c>")), T0, T0)
    assert fresh is not None
    assert [v for n, v in fresh.headers if n.lower() == "link"] == ["<c>"]
