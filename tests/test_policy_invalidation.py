"""Invalidation after unsafe methods (RFC 9111 §4.4)."""

import pytest

from edge.policy.invalidation import (
    invalidation_targets,
    is_unsafe,
    normalise_uri,
    same_origin,
)

URL = "https://example.com/a/b?x=1"

# (method, status, response headers, expected)
CASES = [
    ("POST", 200, (), [URL]),
    ("PUT", 201, (), [URL]),
    ("DELETE", 204, (), [URL]),
    ("PATCH", 200, (), [URL]),
    ("PURGE", 200, (), [URL]),  # unknown method: safety unknown -> unsafe
    ("get", 200, (), [URL]),  # methods are case-sensitive: "get" is not GET
    ("POST", 303, (("Location", "/done"),), [URL, "https://example.com/done"]),
    ("POST", 399, (), [URL]),
    ("POST", 400, (), []),  # error statuses do not invalidate
    ("POST", 500, (("Location", "/x"),), []),
    ("POST", 100, (), []),
    ("GET", 200, (("Location", "/x"),), []),
    ("HEAD", 200, (), []),
    ("OPTIONS", 200, (), []),
    ("TRACE", 200, (), []),
    ("POST", 201, (("Location", "c"),), [URL, "https://example.com/a/c"]),  # relative ref
    ("POST", 201, (("Location", "../up"),), [URL, "https://example.com/up"]),
    ("POST", 201, (("Content-Location", "/items/7"),), [URL, "https://example.com/items/7"]),
    ("POST", 201, (("Location", "/l"), ("Content-Location", "/cl")),
     [URL, "https://example.com/l", "https://example.com/cl"]),
    ("POST", 201, (("Location", "/same"), ("Content-Location", "/same")),
     [URL, "https://example.com/same"]),
    ("POST", 201, (("Location", URL + "#frag"),), [URL]),  # fragment dropped, no duplicate
    # other origins are never invalidated
    ("POST", 201, (("Location", "https://evil.example/a"),), [URL]),
    ("POST", 201, (("Location", "//evil.example/a"),), [URL]),
    ("POST", 201, (("Location", "http://example.com/a"),), [URL]),  # scheme differs
    ("POST", 201, (("Location", "https://example.com:8443/a"),), [URL]),  # port differs
    ("POST", 201, (("Location", "HTTPS://EXAMPLE.com:443/p"),),
     [URL, "https://example.com/p"]),  # same origin: case and default port, normalised
    ("POST", 201, (("Location", "https://example.com:bad/a"),), [URL]),
    ("POST", 201, (("Location", "   "),), [URL]),
]


@pytest.mark.parametrize(("method", "status", "headers", "expected"), CASES)
def test_invalidation_targets(method, status, headers, expected):
    assert invalidation_targets(method, URL, status, headers) == expected


def test_request_url_fragment_is_dropped():
    assert invalidation_targets("POST", "http://h/p#x", 200, ()) == ["http://h/p"]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("HTTP://Example.COM:80/A?B=C#f", "http://example.com/A?B=C"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("http://u:p@h.example/x", "http://u:p@h.example/x"),
        ("http://h:bad/x", "http://h:bad/x"),
    ],
)
def test_normalise_uri(uri, expected):
    assert normalise_uri(uri) == expected


def test_helpers():
    assert not is_unsafe("GET") and is_unsafe("POST")
    assert same_origin("http://a.example/x", "http://A.EXAMPLE:80/y")
    assert not same_origin("http://a.example/x", "https://a.example/x")
    assert not same_origin("/relative", "/relative")
