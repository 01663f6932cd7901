"""Hit decisions (RFC 9111 §4, §5.2.1; RFC 5861) and conditional requests (§4.3.1)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy.config import PolicyConfig
from edge.policy.freshness import StoredMeta
from edge.policy.request import (
    HitDecision,
    Lookup,
    can_serve_stale_on_error,
    conditional_headers,
    on_hit,
    on_miss,
    post_store_uri,
)
from geoconfig.httpdate import format_http_date

T0 = 1_700_000_000.0
DATE = format_http_date(T0)
F, S, SWR, V, GW = (
    Lookup.FRESH,
    Lookup.STALE,
    Lookup.STALE_WHILE_REVALIDATE,
    Lookup.MUST_VALIDATE,
    Lookup.GATEWAY_TIMEOUT,
)
LENIENT_S_MAXAGE = PolicyConfig(stale_with_s_maxage=True)
IGNORE_REQ = PolicyConfig(honour_request_cache_control=False)


def stored(*extra, status=200):
    """Stored at T0 with Date T0, so current_age == now - T0 (plus any Age header)."""
    return StoredMeta(status, (("Date", DATE), *extra), T0, T0)


def cc(value):
    return ("Cache-Control", value)


# (stored extra headers, request headers, now - T0, config, (action, reason, age, lifetime))
HIT_CASES = [
    ((cc("max-age=60"),), (), 10, None, (F, "fresh", 10, 60)),
    ((cc("max-age=60"),), (), 59.5, None, (F, "fresh", 59.5, 60)),
    ((cc("max-age=60"),), (), 60, None, (V, "stale", 60, 60)),  # fresh iff lifetime > age
    ((cc("max-age=60, stale-while-revalidate=30"),), (), 90, None,
     (SWR, "stale-while-revalidate", 90, 60)),
    ((cc("max-age=60, stale-while-revalidate=30"),), (), 90.5, None, (V, "stale", 90.5, 60)),
    ((cc("max-age=60, stale-while-revalidate=30"),), (cc("no-cache"),), 70, None,
     (V, "request-no-cache", 70, 60)),
    ((cc("max-age=60"),), (cc("no-cache"),), 10, None, (V, "request-no-cache", 10, 60)),
    ((cc("max-age=60"),), (("Pragma", "no-cache"),), 10, None, (V, "request-no-cache", 10, 60)),
    ((cc("max-age=60"),), (cc("no-cache"),), 10, IGNORE_REQ, (F, "fresh", 10, 60)),
    ((cc("no-cache, max-age=60"),), (), 10, None, (V, "no-cache", 10, 60)),
    ((cc('no-cache="Set-Cookie", max-age=60'),), (), 10, None, (F, "fresh", 10, 60)),
    ((cc("max-age=60, must-revalidate, stale-while-revalidate=30"),), (), 70, None,
     (V, "must-revalidate", 70, 60)),
    ((cc("max-age=60, proxy-revalidate, stale-while-revalidate=30"),), (), 70, None,
     (V, "proxy-revalidate", 70, 60)),
    ((cc("s-maxage=60, stale-while-revalidate=30"),), (), 70, None, (V, "s-maxage", 70, 60)),
    ((cc("s-maxage=60, stale-while-revalidate=30"),), (), 70, LENIENT_S_MAXAGE,
     (SWR, "stale-while-revalidate", 70, 60)),
    ((cc("s-maxage=60"),), (), 30, None, (F, "fresh", 30, 60)),
    # request max-age (§5.2.1.1)
    ((cc("max-age=60"),), (cc("max-age=5"),), 10, None, (V, "request-max-age", 10, 60)),
    ((cc("max-age=60"),), (cc("max-age=10"),), 10, None, (F, "fresh", 10, 60)),
    ((cc("max-age=60"),), (cc("max-age=0"),), 0, None, (F, "fresh", 0, 60)),
    ((cc("max-age=60"),), (cc("max-age=5"),), 10, IGNORE_REQ, (F, "fresh", 10, 60)),
    # request min-fresh (§5.2.1.3)
    ((cc("max-age=60"),), (cc("min-fresh=20"),), 45, None, (V, "request-min-fresh", 45, 60)),
    ((cc("max-age=60"),), (cc("min-fresh=20"),), 40, None, (F, "fresh", 40, 60)),
    ((cc("max-age=60"),), (cc("min-fresh=20, max-stale"),), 70, None,
     (V, "request-min-fresh", 70, 60)),
    # request max-stale (§5.2.1.2)
    ((cc("max-age=60"),), (cc("max-stale"),), 1000, None, (S, "request-max-stale", 1000, 60)),
    ((cc("max-age=60"),), (cc("max-stale=10"),), 70, None, (S, "request-max-stale", 70, 60)),
    ((cc("max-age=60"),), (cc("max-stale=10"),), 71, None, (V, "stale", 71, 60)),
    ((cc("max-age=60, stale-while-revalidate=30"),), (cc("max-stale=10"),), 80, None,
     (SWR, "stale-while-revalidate", 80, 60)),
    ((cc("max-age=60, must-revalidate"),), (cc("max-stale"),), 70, None,
     (V, "must-revalidate", 70, 60)),
    ((cc("max-age=60"),), (cc("max-age=100, max-stale=50"),), 90, None,
     (S, "request-max-stale", 90, 60)),
    # only-if-cached (§5.2.1.7)
    ((cc("max-age=60"),), (cc("only-if-cached"),), 10, None, (F, "fresh", 10, 60)),
    ((cc("max-age=60"),), (cc("only-if-cached"),), 70, None, (GW, "stale", 70, 60)),
    ((cc("max-age=60"),), (cc("only-if-cached, no-cache"),), 10, None,
     (GW, "request-no-cache", 10, 60)),
    ((cc("max-age=60, stale-while-revalidate=30"),), (cc("only-if-cached"),), 70, None,
     (SWR, "stale-while-revalidate", 70, 60)),
    ((cc("max-age=60"),), (cc("only-if-cached, max-stale"),), 70, None,
     (S, "request-max-stale", 70, 60)),
    # Age from upstream counts (§4.2.3): 50 + 10 = 60 -> stale
    ((cc("max-age=60"), ("Age", "50")), (), 10, None, (V, "stale", 60, 60)),
    # the targeted field governs (RFC 9213)
    ((cc("no-cache"), ("CDN-Cache-Control", "max-age=60")), (), 10, None, (F, "fresh", 10, 60)),
    ((cc("max-age=600"), ("CDN-Cache-Control", "max-age=60")), (), 70, None,
     (V, "stale", 70, 60)),
    # heuristic freshness: 10% of 10000 s
    ((("Last-Modified", format_http_date(T0 - 10000)),), (), 500, None, (F, "fresh", 500, 1000)),
    # invalid max-age -> stale at once
    ((cc("max-age=soon"),), (), 0, None, (V, "stale", 0, 0)),
]


@pytest.mark.parametrize(("extra", "req", "now", "cfg", "expected"), HIT_CASES)
def test_on_hit(extra, req, now, cfg, expected):
    decision = on_hit(req, stored(*extra), T0 + now, *([cfg] if cfg else []))
    assert (decision.action, decision.reason, decision.age, decision.lifetime) == expected


def test_hit_decision_staleness_and_ttl():
    decision = on_hit((), stored(cc("max-age=60, stale-while-revalidate=30")), T0 + 75)
    assert (decision.staleness, decision.ttl) == (15.0, -15.0)
    fresh = on_hit((), stored(cc("max-age=60")), T0 + 20)
    assert (fresh.staleness, fresh.ttl) == (0.0, 40.0)
    assert HitDecision(Lookup.MISS, "miss").ttl == 0.0


def test_on_miss():
    assert on_miss(()) == HitDecision(Lookup.MISS, "miss")
    assert on_miss((cc("only-if-cached"),)) == HitDecision(Lookup.GATEWAY_TIMEOUT, "only-if-cached")
    assert on_miss((cc("max-stale, only-if-cached"),), IGNORE_REQ).action is GW


@given(st.floats(0, 10**6), st.floats(0, 10**6))
def test_fresh_never_returned_once_stale(t1, t2):
    """Monotonicity: if FRESH at a later time, then FRESH at any earlier time."""
    s = stored(cc("max-age=3600, stale-while-revalidate=60"))
    early, late = sorted((t1, t2))
    if on_hit((), s, T0 + late).action is F:
        assert on_hit((), s, T0 + early).action is F


# (stored extra headers, request headers, now - T0, config, expected)
STALE_IF_ERROR_CASES = [
    ((cc("max-age=60, stale-if-error=300"),), (), 300, None, True),  # staleness 240
    ((cc("max-age=60, stale-if-error=300"),), (), 360, None, True),  # 300: inclusive
    ((cc("max-age=60, stale-if-error=300"),), (), 361, None, False),
    ((cc("max-age=60"),), (), 70, None, False),
    ((cc("max-age=60"),), (), 30, None, True),  # still fresh
    ((cc("max-age=60, stale-if-error=300, must-revalidate"),), (), 70, None, False),
    ((cc("max-age=60, stale-if-error=300, proxy-revalidate"),), (), 70, None, False),
    ((cc("s-maxage=60, stale-if-error=300"),), (), 70, None, False),
    ((cc("s-maxage=60, stale-if-error=300"),), (), 70, LENIENT_S_MAXAGE, True),
    ((cc("no-cache, max-age=60, stale-if-error=300"),), (), 10, None, False),
    ((cc("max-age=60"),), (cc("stale-if-error=100"),), 150, None, True),
    ((cc("max-age=60"),), (cc("stale-if-error=100"),), 170, None, False),
    ((cc("max-age=60, stale-if-error=300"),), (cc("stale-if-error=10"),), 100, None, False),
    ((cc("max-age=60"),), (cc("max-stale=100"),), 150, None, True),
    ((cc("max-age=60, stale-if-error=300"),), (cc("no-cache"),), 100, None, False),
    ((cc("max-age=60"),), (cc("no-cache, stale-if-error=60"),), 100, None, True),
    ((cc("max-age=60, stale-while-revalidate=600"),), (), 100, None, False),
    ((("CDN-Cache-Control", "max-age=60, stale-if-error=300"), cc("no-store")), (), 200, None,
     True),
]


@pytest.mark.parametrize(("extra", "req", "now", "cfg", "expected"), STALE_IF_ERROR_CASES)
def test_can_serve_stale_on_error(extra, req, now, cfg, expected):
    args = [cfg] if cfg else []
    assert can_serve_stale_on_error(stored(*extra), req, T0 + now, *args) is expected


LM = "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ((("ETag", '"abc"'), ("Last-Modified", LM)),
         (("If-None-Match", '"abc"'), ("If-Modified-Since", LM))),
        ((("ETag", 'W/"abc"'),), (("If-None-Match", 'W/"abc"'),)),
        ((("Last-Modified", LM),), (("If-Modified-Since", LM),)),
        ((("ETag", '"x"'), ("Last-Modified", "not a date")), (("If-None-Match", '"x"'),)),
        ((), ()),
    ],
)
def test_conditional_headers(extra, expected):
    assert conditional_headers(StoredMeta(200, extra, T0, T0)) == expected


# -- post_store_uri: POST responses stored for later GETs (RFC 9111 §3, RFC 9110 §9.3.3) --------

_POST_ON = PolicyConfig(cacheable_methods=frozenset({"GET", "HEAD", "POST"}))
_TARGET = "http://www.example.test/form?a=1"


@pytest.mark.parametrize(("status", "headers", "config", "expected"), [
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1")], _POST_ON,
     _TARGET),
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", _TARGET)], _POST_ON, _TARGET),
    (200, [("Cache-Control", "max-age=60"),
           ("Content-Location", "HTTP://WWW.EXAMPLE.TEST:80/form?a=1")], _POST_ON, _TARGET),
    (203, [("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"), ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
           ("Content-Location", "form?a=1")], _POST_ON, _TARGET),
    (200, [("CDN-Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1")], _POST_ON,
     _TARGET),
    # off by default
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1")], PolicyConfig(),
     None),
    # no Content-Location, or another URI (even another query)
    (200, [("Cache-Control", "max-age=60")], _POST_ON, None),
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", "")], _POST_ON, None),
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", "/form")], _POST_ON, None),
    (200, [("Cache-Control", "max-age=60"), ("Content-Location", "/other")], _POST_ON, None),
    (200, [("Cache-Control", "max-age=60"),
           ("Content-Location", "http://evil.test/form?a=1")], _POST_ON, None),
    # explicit freshness only: not heuristics, not public alone
    (200, [("Last-Modified", "Thu, 01 Jan 2020 00:00:00 GMT"),
           ("Content-Location", "/form?a=1")], _POST_ON, None),
    (200, [("Cache-Control", "public"), ("Content-Location", "/form?a=1")], _POST_ON, None),
    # not storable anyway
    (200, [("Cache-Control", "max-age=60, no-store"), ("Content-Location", "/form?a=1")],
     _POST_ON, None),
    (200, [("Cache-Control", "max-age=60, private"), ("Content-Location", "/form?a=1")],
     _POST_ON, None),
    # Vary, and statuses other than 200/203
    (200, [("Cache-Control", "max-age=60"), ("Vary", "Accept"),
           ("Content-Location", "/form?a=1")], _POST_ON, None),
    (201, [("Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1")], _POST_ON, None),
    (404, [("Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1")], _POST_ON, None),
])
def test_post_store_uri(status, headers, config, expected):
    assert post_store_uri(_TARGET, status, (), tuple(headers), config) == expected


def test_post_store_uri_respects_the_request():
    headers = (("Cache-Control", "max-age=60"), ("Content-Location", "/form?a=1"))
    assert post_store_uri(_TARGET, 200, (("Authorization", "Bearer x"),), headers,
                          _POST_ON) is None
    assert post_store_uri(_TARGET, 200, (("Cache-Control", "no-store"),), headers,
                          _POST_ON) is None
