"""edge.policy.response: the fill's origin answer and a failed fill, as decisions (tables)."""

from __future__ import annotations

import pytest

from edge.policy.cachecontrol import Directives
from edge.policy.freshness import StoredMeta
from edge.policy.request import Lookup
from edge.policy.response import Action, after_soft_purge, on_error, on_response, retention
from geoconfig.httpdate import format_http_date

NOW = 1_750_000_000.0
D = format_http_date


def stored(*headers: tuple[str, str], age: float = 0.0) -> StoredMeta:
    """A 200 stored ``age`` seconds ago, with a Date of that time."""
    t = NOW - age
    return StoredMeta(200, (("Date", D(t)), *headers), t, t)


ETAG = ("ETag", '"v1"')
LM = ("Last-Modified", D(NOW - 86400))
MAX60 = ("Cache-Control", "max-age=60")

# (status, response headers, request headers, stored meta, validating, content length,
#  expected action, expected reason, expected mark)
CASES = {
    "store": (200, (MAX60,), (), None, False, 10, Action.STORE, "explicit", False),
    "store-heuristic": (200, (LM,), (), None, False, None, Action.STORE, "heuristic", False),
    "too-large": (200, (MAX60,), (), None, False, 10_000, Action.PASS, "too-large", True),
    "no-store": (200, (("Cache-Control", "no-store"),), (), None, False, 1, Action.PASS,
                 "no-store", True),
    "private": (200, (("Cache-Control", "private"),), (), None, False, 1, Action.PASS,
                "private", True),
    "authorization: not marked": (200, (MAX60,), (("Authorization", "Bearer x"),), None,
                                  False, 1, Action.PASS, "authorization", False),
    "request no-store: not marked": (200, (MAX60,), (("Cache-Control", "no-store"),), None,
                                     False, 1, Action.PASS, "request-no-store", False),
    "status 999": (999, (MAX60,), (), None, False, 1, Action.BAD_GATEWAY, "invalid-status",
                   False),
    "status 600": (600, (), (), None, False, 1, Action.BAD_GATEWAY, "invalid-status", False),
    "status 0": (0, (), (), None, False, 1, Action.BAD_GATEWAY, "invalid-status", False),
    "status 199": (199, (), (), None, False, 1, Action.BAD_GATEWAY, "invalid-status", False),
    "304 to an unconditional request": (304, (), (), None, False, None, Action.BAD_GATEWAY,
                                        "unexpected-304", False),
    "304 while something is stored, not asked": (304, (ETAG,), (), stored(ETAG, MAX60), False,
                                                 None, Action.BAD_GATEWAY, "unexpected-304",
                                                 False),
    "304 with the ETag": (304, (ETAG,), (), stored(ETAG, MAX60, age=100), True, None,
                          Action.FRESHEN, "revalidated", False),
    "bare 304, ETag stored (one candidate)": (304, (MAX60,), (), stored(ETAG, MAX60, age=100),
                                              True, None, Action.FRESHEN, "revalidated",
                                              False),
    "bare 304, Last-Modified stored": (304, (), (), stored(LM, MAX60, age=100), True, None,
                                       Action.FRESHEN, "revalidated", False),
    "304 naming another ETag": (304, (("ETag", '"v2"'),), (), stored(ETAG, MAX60, age=100),
                                True, None, Action.REFETCH, "validator-mismatch", False),
    "500 under stale-if-error": (500, (), (), stored(("Cache-Control",
                                                      "max-age=60, stale-if-error=600"),
                                                     age=100), True, 1, Action.STALE,
                                 "stale-if-error", False),
    "500, stale-if-error over": (500, (), (), stored(("Cache-Control",
                                                      "max-age=60, stale-if-error=10"),
                                                     age=100), True, 1, Action.PASS,
                                 "no-freshness", True),
    "503 with must-revalidate": (503, (), (), stored(("Cache-Control",
                                                      "max-age=60, must-revalidate, "
                                                      "stale-if-error=600"), age=100),
                                 True, 1, Action.PASS, "no-freshness", True),
    "500 with no-cache stored": (500, (), (), stored(("Cache-Control",
                                                      "no-cache, stale-if-error=600"), age=1),
                                 True, 1, Action.PASS, "no-freshness", True),
}


@pytest.mark.parametrize(("status", "resp", "req", "meta", "validating", "length", "action",
                          "reason", "mark"), list(CASES.values()), ids=list(CASES))
def test_on_response(status, resp, req, meta, validating, length, action, reason, mark):
    d = on_response(status, resp, req, req, meta, validating, length, 1000, NOW - 0.1, NOW)
    assert (d.action, d.reason, d.mark) == (action, reason, mark)
    if action is Action.FRESHEN:
        assert d.meta is not None and d.meta.response_time == NOW
    assert d.valid_status == (reason != "invalid-status")


# (stored Cache-Control or None for nothing stored, usable, timed out, serve?, status)
ERRORS = [
    (None, True, False, False, 502),
    (None, True, True, False, 504),
    ("max-age=60", True, False, True, 200),
    ("max-age=60", False, False, False, 502),  # a hit-for-miss marker is not a response
    ("max-age=1", True, True, True, 200),  # stale: disconnected serving (RFC 9111 §4.2.4)
    ("no-cache", True, False, False, 502),  # RFC 9111 §5.2.2.4: never without validation
    ("max-age=60, must-revalidate", True, False, False, 502),
    ("max-age=60, proxy-revalidate", True, True, False, 504),
    ("s-maxage=60", True, False, False, 502),
]


@pytest.mark.parametrize(("cc", "usable", "timed_out", "serve", "status"), ERRORS)
def test_on_error(cc, usable, timed_out, serve, status):
    meta = None if cc is None else stored(("Cache-Control", cc), age=100)
    d = on_error(meta, usable, timed_out)
    assert (d.serve_stored, d.status if not d.serve_stored else 200) == (serve, status)


def test_on_error_honours_cdn_cache_control_no_cache():
    meta = stored(("Cache-Control", "max-age=600"), ("CDN-Cache-Control", "no-cache"), age=1)
    assert not on_error(meta, True, False).serve_stored


@pytest.mark.parametrize(("swr", "sie", "keep", "expected"), [
    (None, None, 3600, 4600), (7200, None, 3600, 8200), (None, 10, 0, 1010), (5, 9, 1, 1009),
])
def test_retention(swr, sie, keep, expected):
    d = Directives(stale_while_revalidate=swr, stale_if_error=sie)
    assert retention(d, 1000, keep) == expected


@pytest.mark.parametrize(("action", "soft", "expected"), [
    (Lookup.FRESH, True, Lookup.MUST_VALIDATE),
    (Lookup.STALE_WHILE_REVALIDATE, True, Lookup.MUST_VALIDATE),
    (Lookup.STALE, True, Lookup.STALE),
    (Lookup.FRESH, False, Lookup.FRESH),
    (Lookup.GATEWAY_TIMEOUT, True, Lookup.GATEWAY_TIMEOUT),
])
def test_after_soft_purge(action, soft, expected):
    assert after_soft_purge(action, soft) is expected
