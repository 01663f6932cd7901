"""Storability (RFC 9111 §3), freshness lifetime (§4.2.1/§4.2.2) and age (§4.2.3)."""

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy.cachecontrol import response_directives
from edge.policy.config import PolicyConfig
from edge.policy.freshness import (
    StoredMeta,
    age_header_value,
    current_age,
    freshness_lifetime,
    storable,
    stored_lifetime,
)
from geoconfig.httpdate import format_http_date

T0 = 1_700_000_000.0
DATE = format_http_date(T0)
CC = "Cache-Control"
AUTH = (("Authorization", "Bearer x"),)
PARTIAL = PolicyConfig(cache_partial_content=True)
RFC_COOKIES = PolicyConfig(store_set_cookie=True)

# (method, request headers, status, response headers, config, (store, reason))
STORABLE_CASES = [
    ("GET", (), 200, ((CC, "max-age=60"),), None, (True, "explicit")),
    ("HEAD", (), 200, ((CC, "s-maxage=60"),), None, (True, "explicit")),
    ("GET", (), 200, (("Expires", DATE),), None, (True, "explicit")),
    ("GET", (), 200, (("Expires", "0"),), None, (True, "explicit")),  # stored, already stale
    ("GET", (), 200, (), None, (True, "heuristic")),
    ("GET", (), 404, (), None, (True, "heuristic")),
    ("GET", (), 302, (), None, (False, "no-freshness")),
    ("GET", (), 302, ((CC, "public"),), None, (True, "public")),
    ("GET", (), 500, ((CC, "max-age=5"),), None, (True, "explicit")),
    ("GET", (), 500, (), None, (False, "no-freshness")),
    ("POST", (), 200, ((CC, "max-age=60"),), None, (False, "method")),
    ("PUT", (), 200, ((CC, "max-age=60"),), None, (False, "method")),
    ("GET", (), 101, (), None, (False, "status-not-final")),
    ("GET", (), 103, ((CC, "max-age=60"),), None, (False, "status-not-final")),
    ("GET", (), 304, ((CC, "max-age=60"),), None, (False, "not-modified")),
    ("GET", (), 206, ((CC, "max-age=60"),), None, (False, "partial-content")),
    ("GET", (), 206, ((CC, "max-age=60"),), PARTIAL, (True, "explicit")),
    ("GET", ((CC, "no-store"),), 200, ((CC, "max-age=60"),), None, (False, "request-no-store")),
    ("GET", (), 200, ((CC, "no-store, max-age=60"),), None, (False, "no-store")),
    ("GET", (), 200, ((CC, "max-age=60"), (CC, "no-store")), None, (False, "no-store")),
    # must-understand (§5.2.2.3): understood status -> no-store ignored
    ("GET", (), 200, ((CC, "must-understand, no-store, max-age=60"),), None, (True, "explicit")),
    ("GET", (), 299, ((CC, "must-understand, no-store, max-age=60"),), None,
     (False, "must-understand")),
    ("GET", (), 206, ((CC, "must-understand, max-age=60"),), PARTIAL, (True, "explicit")),
    ("GET", (), 200, ((CC, "private, max-age=60"),), None, (False, "private")),
    ("GET", (), 200, ((CC, 'private="X-User", max-age=60'),), None, (True, "explicit")),
    ("GET", AUTH, 200, ((CC, "max-age=60"),), None, (False, "authorization")),
    ("GET", AUTH, 200, ((CC, "max-age=60, public"),), None, (True, "explicit")),
    ("GET", AUTH, 200, ((CC, "max-age=60, must-revalidate"),), None, (True, "explicit")),
    ("GET", AUTH, 200, ((CC, "s-maxage=60"),), None, (True, "explicit")),
    ("GET", (), 200, ((CC, "max-age=60"), ("Vary", "Accept, *")), None, (False, "vary-star")),
    ("GET", (), 200, ((CC, 'max-age=60, no-cache="Vary"'),), None,
     (False, "qualified-policy-field")),
    ("GET", (), 200, ((CC, "max-age=60"), ("Set-Cookie", "a=1")), None, (False, "set-cookie")),
    ("GET", (), 200, ((CC, "max-age=60, public"), ("Set-Cookie", "a=1")), None,
     (True, "explicit")),
    ("GET", (), 200, ((CC, "s-maxage=60"), ("Set-Cookie", "a=1")), None, (True, "explicit")),
    ("GET", (), 200, ((CC, 'max-age=60, no-cache="set-cookie"'), ("Set-Cookie", "a=1")), None,
     (True, "explicit")),
    ("GET", (), 200, (("CDN-Cache-Control", "max-age=60"), ("Set-Cookie", "a=1")), None,
     (True, "explicit")),
    ("GET", (), 200, ((CC, "max-age=60"), ("Set-Cookie", "a=1")), RFC_COOKIES, (True, "explicit")),
    ("GET", (), 200, (), None, (True, "heuristic")),
    # targeted field wins (RFC 9213): CDN caches even though Cache-Control says no-store
    ("GET", (), 200, ((CC, "no-store"), ("CDN-Cache-Control", "max-age=600")), None,
     (True, "explicit")),
    ("GET", (), 200, ((CC, "max-age=600"), ("CDN-Cache-Control", "no-store")), None,
     (False, "no-store")),
    ("GET", (), 200, ((CC, "max-age=600"), ("CDN-Cache-Control", "private")), None,
     (False, "private")),
    ("GET", (), 200, ((CC, "private"), ("Surrogate-Control", "max-age=60")), None,
     (True, "explicit")),
    ("GET", (), 200, ((CC, "max-age=60"), ("Surrogate-Control", "no-store")), None,
     (False, "no-store")),
    # Expires ignored when a targeted field governs
    ("GET", (), 302, (("Expires", DATE), ("CDN-Cache-Control", "no-cache")), None,
     (False, "no-freshness")),
]


@pytest.mark.parametrize(("method", "req", "status", "resp", "cfg", "expected"), STORABLE_CASES)
def test_storable(method, req, status, resp, cfg, expected):
    decision = storable(method, req, status, resp, *([cfg] if cfg else []))
    assert (decision.store, decision.reason) == expected
    assert bool(decision) is expected[0]


def hd(seconds):
    return format_http_date(T0 + seconds)


# (response headers, status, config, expected lifetime); Date is T0 unless given
LIFETIME_CASES = [
    (((CC, "s-maxage=10, max-age=60"),), 200, None, 10.0),
    (((CC, "max-age=60"), ("Expires", hd(3600))), 200, None, 60.0),
    ((("Expires", hd(3600)),), 200, None, 3600.0),
    ((("Expires", hd(3600)), (CC, "s-maxage=5")), 200, None, 5.0),
    ((("Expires", "0"),), 200, None, 0.0),  # RFC 9111 §5.3 "0" = already expired
    ((("Expires", "garbage"), ("Last-Modified", hd(-100000))), 200, None, 0.0),
    ((("Expires", hd(-60)),), 200, None, 0.0),
    ((("Expires", hd(60)), ("Expires", hd(120))), 200, None, 0.0),  # conflicting lines
    ((("Expires", hd(60)), ("Expires", hd(60))), 200, None, 60.0),
    (((CC, "max-age=abc"), ("Expires", hd(60))), 200, None, 0.0),
    (((CC, "max-age=99999999999"),), 200, None, float(2**31)),
    # heuristic §4.2.2: 10% of (Date - Last-Modified)
    ((("Last-Modified", hd(-10000)),), 200, None, 1000.0),
    ((("Last-Modified", hd(-10000)),), 404, None, 1000.0),
    ((("Last-Modified", hd(-10_000_000)),), 200, None, 86400.0),  # capped
    ((("Last-Modified", hd(-10000)),), 200, PolicyConfig(heuristic_fraction=0.2), 2000.0),
    ((("Last-Modified", hd(-10_000_000)),), 200, PolicyConfig(heuristic_max=600), 600.0),
    ((("Last-Modified", hd(-10000)),), 200, PolicyConfig(heuristic_enabled=False), 0.0),
    ((("Last-Modified", hd(-10000)),), 302, None, 0.0),  # not heuristically cacheable
    ((("Last-Modified", hd(-10000)), (CC, "public")), 302, None, 1000.0),
    ((("Last-Modified", hd(+100)),), 200, None, 0.0),  # Last-Modified after Date
    ((), 200, None, 0.0),
    # RFC 9213: the targeted field governs, Expires is ignored
    ((("CDN-Cache-Control", "max-age=600"), ("Expires", hd(60))), 200, None, 600.0),
    ((("CDN-Cache-Control", "no-cache"), ("Expires", hd(60))), 200, None, 0.0),
    ((("Surrogate-Control", "max-age=30"), (CC, "max-age=5")), 200, None, 30.0),
]


@pytest.mark.parametrize(("headers", "status", "cfg", "expected"), LIFETIME_CASES)
def test_freshness_lifetime(headers, status, cfg, expected):
    headers = (("Date", DATE), *headers)
    kwargs = {"config": cfg} if cfg else {}
    d = response_directives(headers, *([cfg] if cfg else []))
    assert freshness_lifetime(headers, d, T0 + 5, status=status, **kwargs) == expected


def test_expires_without_date_uses_response_time():
    headers = (("Expires", hd(3600)),)
    d = response_directives(headers)
    assert freshness_lifetime(headers, d, T0 + 600, status=200) == 3000.0
    bad_date = (("Date", "yesterday"), *headers)
    assert freshness_lifetime(bad_date, d, T0 + 600, status=200) == 3000.0


def test_heuristic_without_date_uses_response_time():
    headers = (("Last-Modified", hd(-10000)),)
    d = response_directives(headers)
    assert freshness_lifetime(headers, d, T0 + 1000, status=200) == 1100.0


# RFC 9111 §4.2.3, term by term. Times relative to T0.
# (request_time, response_time, Date, Age, now, expected current_age, comment)
AGE_CASES = [
    # apparent 1, delay 2, corrected_age_value 2, initial 2, resident 8
    (0, 2, 1, None, 10, 10.0),
    # Age from an upstream cache: corrected_age_value = 100 + 2 -> 102 + 8
    (0, 2, 2, "100", 10, 110.0),
    # origin clock behind: apparent = 2 - (-500) = 502 dominates
    (0, 2, -500, None, 10, 510.0),
    # origin clock ahead: apparent clamps to 0, delay 2 remains
    (0, 2, 1000, None, 10, 10.0),
    # no Date: date_value = response_time -> apparent 0; Age 30 + delay 2, resident 8
    (0, 2, None, "30", 10, 40.0),
    # invalid Age counts as 0
    (0, 2, 2, "abc", 10, 10.0),
    (0, 2, 2, "-5", 10, 10.0),
    # Age overflow -> 2^31 (§1.2.2)
    (0, 2, 2, "99999999999", 10, 2**31 + 2 + 8),
    # read at the response time: resident 0
    (0, 0, 0, "7", 0, 7.0),
    # fractional times stay exact
    (0.25, 0.75, 0, None, 3.0, 3.0),
]


@pytest.mark.parametrize(("req_t", "resp_t", "date", "age", "now", "expected"), AGE_CASES)
def test_current_age_table(req_t, resp_t, date, age, now, expected):
    headers = []
    if date is not None:
        headers.append(("Date", hd(date)))
    if age is not None:
        headers.append(("Age", age))
    stored = StoredMeta(200, tuple(headers), T0 + req_t, T0 + resp_t)
    assert current_age(stored, T0 + now) == expected


@given(
    delay=st.floats(0, 1000),
    date_offset=st.integers(-10**6, 10**6),
    age=st.integers(0, 10**6),
    t1=st.floats(0, 10**7),
    dt=st.floats(0, 10**7),
)
def test_current_age_is_monotone_in_now(delay, date_offset, age, t1, dt):
    stored = StoredMeta(200, (("Date", hd(date_offset)), ("Age", str(age))), T0, T0 + delay)
    a1 = current_age(stored, T0 + t1)
    a2 = current_age(stored, T0 + t1 + dt)
    assert a2 >= a1
    assert math.isclose(a2 - a1, dt, abs_tol=1e-6)


@pytest.mark.parametrize(
    ("age", "wire"), [(0.9, "0"), (59.99, "59"), (-3, "0"), (2**40, "2147483648"), (120, "120")]
)
def test_age_header_value(age, wire):
    assert age_header_value(age) == wire


def test_stored_lifetime_uses_status_and_config():
    stored = StoredMeta(302, (("Date", DATE), ("Last-Modified", hd(-1000))), T0, T0)
    assert stored_lifetime(stored) == 0.0
    stored_200 = StoredMeta(200, stored.headers, T0, T0)
    assert stored_lifetime(stored_200) == 100.0


def test_stored_meta_json_round_trip():
    stored = StoredMeta(
        status=200,
        headers=(("Date", DATE), ("Cache-Control", "max-age=60"), ("X-A", "1"), ("x-a", "2")),
        request_time=T0 - 0.125,
        response_time=T0,
        request_method="HEAD",
        vary_key="abc",
    )
    doc = stored.to_json()
    assert doc == {
        "v": 1,
        "status": 200,
        "headers": [
            ["Date", DATE], ["Cache-Control", "max-age=60"], ["X-A", "1"], ["x-a", "2"]
        ],
        "request_time": T0 - 0.125,
        "response_time": T0,
        "request_method": "HEAD",
        "vary_key": "abc",
    }
    assert StoredMeta.from_json(json.loads(json.dumps(doc))) == stored


header_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)))


@given(
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(header_text, header_text), max_size=8),
    times=st.tuples(st.floats(0, 4e9), st.floats(0, 4e9)),
    method=header_text,
    vary=header_text,
)
def test_stored_meta_json_round_trip_property(status, headers, times, method, vary):
    stored = StoredMeta(status, tuple(headers), times[0], times[1], method, vary)
    assert StoredMeta.from_json(json.loads(json.dumps(stored.to_json()))) == stored


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {"v": 2},
        {"v": 1},
        {"v": 1, "status": "200", "headers": [], "request_time": 0, "response_time": 0,
         "request_method": "GET", "vary_key": ""},
        {"v": 1, "status": True, "headers": [], "request_time": 0, "response_time": 0,
         "request_method": "GET", "vary_key": ""},
        {"v": 1, "status": 200, "headers": [["a"]], "request_time": 0, "response_time": 0,
         "request_method": "GET", "vary_key": ""},
        {"v": 1, "status": 200, "headers": [], "request_time": "x", "response_time": 0,
         "request_method": "GET", "vary_key": ""},
        {"v": 1, "status": 200, "headers": [], "request_time": float("nan"), "response_time": 0,
         "request_method": "GET", "vary_key": ""},
    ],
)
def test_stored_meta_from_json_rejects_malformed(doc):
    with pytest.raises(ValueError):
        StoredMeta.from_json(doc)
