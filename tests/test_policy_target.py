"""edge.policy.target: the request target and Host as keyed and forwarded (table-driven)."""

from __future__ import annotations

import pytest

from edge.policy.target import BadTarget, Target, normalise_authority, parse_target, url_key

# (method, raw target, Host header, expected key or the status of a BadTarget)
CASES = [
    # origin-form
    ("GET", "/x", "example.test", "http://example.test/x"),
    ("GET", "/x", "EXAMPLE.Test", "http://example.test/x"),
    ("GET", "/x", "example.test.", "http://example.test/x"),
    ("GET", "/x", "example.test:80", "http://example.test/x"),
    ("GET", "/x", "example.test:080", "http://example.test/x"),
    ("GET", "/x", "example.test:", "http://example.test/x"),
    ("GET", "/x", "example.test:8080", "http://example.test:8080/x"),
    ("GET", "/x", "127.0.0.1:8080", "http://127.0.0.1:8080/x"),
    ("GET", "/x", "[::1]:8080", "http://[::1]:8080/x"),
    ("GET", "/x", "[0:0::1]", "http://[::1]/x"),
    ("GET", "/x", "my_host.example", "http://my_host.example/x"),
    ("GET", "/x", None, "http://localhost/x"),  # HTTP/1.0 without Host
    # the collision shapes: each would have planted /x's answer under another URL
    ("GET", "/x", "example.test/page", 400),
    ("GET", "/x", "example.test?page", 400),
    ("GET", "/x", "example.test#page", 400),
    ("GET", "/x", "user@example.test", 400),
    ("GET", "/x", "example.test\\page", 400),
    ("GET", "/x", "example test", 400),
    ("GET", "/x", "example..test", 400),
    ("GET", "/x", ".example.test", 400),
    ("GET", "/x", "-bad.example", 400),
    ("GET", "/x", "exa%6dple.test", 400),
    ("GET", "/x", "example.test:99999", 400),
    ("GET", "/x", "example.test:0", 400),
    ("GET", "/x", "example.test:8o", 400),
    ("GET", "/x", "example.test:80:80", 400),
    ("GET", "/x", "[::1", 400),
    ("GET", "/x", "[zz::1]", 400),
    ("GET", "/x", "[::1]x", 400),
    ("GET", "/x", "", 400),
    ("GET", "/x", "a" * 64 + ".test", 400),
    # path normalisation (RFC 3986 §6.2.2): the origin gets the normalised form
    ("GET", "/a/../x", "h", "http://h/x"),
    ("GET", "/a/./x", "h", "http://h/a/x"),
    ("GET", "/../../x", "h", "http://h/x"),
    ("GET", "/a/..", "h", "http://h/"),
    ("GET", "/%78", "h", "http://h/x"),
    ("GET", "/%7e%2f", "h", "http://h/~%2F"),
    ("GET", "/x?a=%7e&b=%2f", "h", "http://h/x?a=~&b=%2F"),
    ("GET", "/x?", "h", "http://h/x?"),
    ("GET", "/x?q=/../y", "h", "http://h/x?q=/../y"),  # dot segments in the query stay
    ("GET", "/%zz", "h", 400),
    ("GET", "/x%", "h", 400),
    ("GET", "/x#frag", "h", 400),
    ("GET", "/x y", "h", 400),
    ("GET", "/x\x00", "h", 400),
    ("GET", "/é", "h", "http://h/%E9"),  # a byte above 0x7F, as received (latin-1)
    ("GET", "/a?x[]=1&y={2}|^", "h", "http://h/a?x%5B%5D=1&y=%7B2%7D%7C%5E"),
    ("GET", '/q?"<>`', "h", "http://h/q?%22%3C%3E%60"),
    ("GET", "/a%5b", "h", "http://h/a%5B"),
    ("GET", "/a\\..\\x", "h", 400),  # a backslash: some origins read it as /
    ("GET", "/a\tb", "h", 400),
    ("GET", "/a\x7f", "h", 400),
    # absolute-form: the authority replaces Host
    ("GET", "http://Example.TEST:80/x?q", "other.test", "http://example.test/x?q"),
    ("GET", "http://example.test", "other.test", "http://example.test/"),
    ("GET", "http://example.test?q=1", None, "http://example.test/?q=1"),
    ("GET", "https://example.test:443/x", None, "https://example.test/x"),
    ("GET", "http://example.test:443/x", None, "http://example.test:443/x"),
    ("GET", "http://user@example.test/x", None, 400),
    ("GET", "http://example.test/page/x", None, "http://example.test/page/x"),
    ("GET", "http://example.test%2fpage/x", None, 400),
    ("GET", "ftp://example.test/x", None, 400),
    ("GET", "http:///x", None, 400),
    ("GET", "example.test/x", None, 400),
    # asterisk- and authority-form
    ("OPTIONS", "*", "h", "http://h*"),
    ("GET", "*", "h", 400),
    ("CONNECT", "example.test:443", "example.test:443", 501),
]


@pytest.mark.parametrize(("method", "raw", "host", "expected"), CASES)
def test_parse_target(method, raw, host, expected):
    got = parse_target(method, raw, host)
    if isinstance(expected, int):
        assert isinstance(got, BadTarget) and got.status == expected, got
    else:
        assert isinstance(got, Target), got
        assert got.key == expected


def test_the_forwarded_parts_are_the_keyed_parts():
    t = parse_target("GET", "/a/../b?%7e", "Example.TEST.:80")
    assert isinstance(t, Target)
    assert (t.authority, t.path_query, t.path) == ("example.test", "/b?~", "/b")
    assert t.key == f"http://{t.authority}{t.path_query}"


@pytest.mark.parametrize(("authority", "scheme", "expected"), [
    ("H.example:443", "https", "h.example"),
    ("h.example:80", "https", "h.example:80"),
    ("h.example", "https", "h.example"),
    ("h/x", "http", None),
])
def test_normalise_authority(authority, scheme, expected):
    assert normalise_authority(authority, scheme) == expected


@pytest.mark.parametrize(("uri", "host", "expected"), [
    ("http://H.example/a#frag", None, "http://h.example/a"),
    ("/a/../b", "h.example:80", "http://h.example/b"),
    ("http://h.example/%41", None, "http://h.example/A"),
    ("not a url", None, None),
])
def test_url_key(uri, host, expected):
    assert url_key(uri, host) == expected
