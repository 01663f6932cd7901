"""Cache-Status (RFC 9211) serialisation."""

import pytest

from edge.policy.cachestatus import add_cache_status, append_cache_status, cache_status

NAME = "geoedge-eu-west-1"

# (kwargs, expected member)
CASES = [
    # RFC 9211 §3 examples (with ExampleCache)
    ({"cache_name": "ExampleCache", "hit": True}, "ExampleCache; hit"),
    ({"cache_name": "ExampleCache", "fwd": "uri-miss"}, "ExampleCache; fwd=uri-miss"),
    ({"cache_name": "ExampleCache", "fwd": "uri-miss", "stored": True},
     "ExampleCache; fwd=uri-miss; stored"),
    ({"cache_name": "ExampleCache", "fwd": "uri-miss", "collapsed": True},
     "ExampleCache; fwd=uri-miss; collapsed"),
    ({"cache_name": "ExampleCache", "fwd": "stale", "fwd_status": 304},
     "ExampleCache; fwd=stale; fwd-status=304"),
    ({"cache_name": "ExampleCache", "hit": True, "ttl": -412}, "ExampleCache; hit; ttl=-412"),
    ({"cache_name": "CDN Company Here", "hit": True, "ttl": 545},
     '"CDN Company Here"; hit; ttl=545'),
    # ours
    ({"cache_name": NAME, "hit": True, "ttl": 120}, "geoedge-eu-west-1; hit; ttl=120"),
    ({"cache_name": NAME, "fwd": "miss", "fwd_status": 200, "stored": True},
     "geoedge-eu-west-1; fwd=miss; fwd-status=200; stored"),
    ({"cache_name": NAME, "hit": True, "ttl": 119.9}, "geoedge-eu-west-1; hit; ttl=119"),
    ({"cache_name": NAME, "hit": True, "ttl": -0.5}, "geoedge-eu-west-1; hit; ttl=-1"),
    ({"cache_name": NAME, "hit": True, "ttl": float("inf")},
     "geoedge-eu-west-1; hit; ttl=999999999999999"),
    ({"cache_name": NAME, "fwd": "bypass", "detail": "set-cookie"},
     "geoedge-eu-west-1; fwd=bypass; detail=set-cookie"),
    ({"cache_name": NAME, "fwd": "method", "detail": "not cacheable"},
     'geoedge-eu-west-1; fwd=method; detail="not cacheable"'),
    ({"cache_name": NAME, "fwd": "request", "detail": 'say "hi"'},
     'geoedge-eu-west-1; fwd=request; detail="say \\"hi\\""'),
    ({"cache_name": NAME, "fwd": "miss", "detail": "caf\u00e9\n"},
     'geoedge-eu-west-1; fwd=miss; detail="caf??"'),
    ({"cache_name": NAME, "fwd": "vary-miss", "fwd_status": 200, "ttl": 30, "stored": True,
      "collapsed": True, "key": "GET https://x/a", "detail": "d"},
     'geoedge-eu-west-1; fwd=vary-miss; fwd-status=200; ttl=30; stored; collapsed; '
     'key="GET https://x/a"; detail=d'),
    ({"cache_name": NAME, "fwd": "partial"}, "geoedge-eu-west-1; fwd=partial"),
    ({"cache_name": "1cache"}, '"1cache"'),  # not a token: first char must be ALPHA or *
    ({"cache_name": "edge/v1:x"}, "edge/v1:x"),
]


@pytest.mark.parametrize(("kwargs", "expected"), CASES)
def test_cache_status(kwargs, expected):
    assert cache_status(**kwargs) == expected


def test_positional_signature():
    assert cache_status(NAME, False, "miss", 200, None, True, False, None) == (
        "geoedge-eu-west-1; fwd=miss; fwd-status=200; stored"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hit": True, "fwd": "miss"},
        {"fwd": "nope"},
        {"fwd_status": 200},
        {"fwd": "miss", "fwd_status": 99},
        {"fwd": "miss", "fwd_status": 600},
        {"ttl": float("nan")},
    ],
)
def test_cache_status_rejects_invalid(kwargs):
    with pytest.raises(ValueError):
        cache_status(NAME, **kwargs)


def test_cache_status_rejects_unrepresentable_name_or_key():
    with pytest.raises(ValueError):
        cache_status("caf\u00e9")
    with pytest.raises(ValueError):
        cache_status(NAME, key="\u00e9")


def test_append_after_upstream():
    ours = cache_status(NAME, hit=True, ttl=545)
    # RFC 9211 §3: members ordered from the origin towards the user
    assert append_cache_status("OriginCache; hit; ttl=1100", ours) == (
        "OriginCache; hit; ttl=1100, geoedge-eu-west-1; hit; ttl=545"
    )
    assert append_cache_status(None, ours) == ours
    assert append_cache_status(["a; hit", " ", "b; fwd=miss"], ours) == (
        "a; hit, b; fwd=miss, " + ours
    )


def test_add_cache_status_to_headers():
    headers = (("Cache-Status", "a; hit"), ("X", "1"), ("cache-status", "b; hit"))
    assert add_cache_status(headers, "geoedge; hit") == (
        ("Cache-Status", "a; hit, b; hit, geoedge; hit"),
        ("X", "1"),
    )
    assert add_cache_status((("X", "1"),), "g; hit") == (("X", "1"), ("Cache-Status", "g; hit"))
