"""edge.policy.h2head: HTTP/2 request header lists, table-driven."""

from __future__ import annotations

import pytest

from edge.policy.h2head import read_head

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test"),
        (b":path", b"/x")]
FLAGS = frozenset({b"range"})


def head(extra=(), base=BASE, **limits):
    lim = {"max_header_bytes": 16384, "max_header_count": 100, "max_url_bytes": 8192,
           "max_body_bytes": 1000, **limits}
    return read_head([*base, *extra], FLAGS, lim["max_header_bytes"],
                     lim["max_header_count"], lim["max_url_bytes"], lim["max_body_bytes"])


@pytest.mark.parametrize(("extra", "base", "why"), [
    ([(b"X-Upper", b"v")], BASE, "bad field name"),
    ([(b"", b"v")], BASE, "bad field name"),
    ([(b"x a", b"v")], BASE, "bad field name"),
    ([(b"x", b"a\r\nb")], BASE, "bad value"),
    ([(b"x", b"a\x00")], BASE, "bad value"),
    ([(b"x", b" lead")], BASE, "bad value"),
    ([(b"x", b"trail\t")], BASE, "bad value"),
    ([(b"connection", b"close")], BASE, "connection-specific"),
    ([(b"transfer-encoding", b"chunked")], BASE, "connection-specific"),
    ([(b"te", b"gzip")], BASE, "connection-specific"),
    ([(b"x", b"1"), (b":path", b"/y")], BASE[:3], "misplaced"),
    ([(b":path", b"/y")], BASE, "misplaced"),  # repeated
    ([(b":status", b"200")], BASE, "misplaced"),
    ([], BASE[1:], "missing"),  # no :method
    ([], BASE[:3], "missing"),  # no :path
    ([], [*BASE[:3], (b":path", b"")], "missing"),
    ([], [(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"a:1")],
     "missing"),
])
def test_malformed(extra, base, why):
    assert why in head(extra, base).malformed


@pytest.mark.parametrize(("extra", "limits", "status"), [
    ([(b"x", b"a" * 20000)], {}, 431),
    ([(b"x", b"v")] * 101, {}, 431),
    ([(b"content-length", b"1001")], {}, 413),
    ([(b"content-length", b"1000")], {}, 0),
    ([], {"max_url_bytes": 1}, 414),
    ([(b"te", b"trailers"), (b"x", b"")], {}, 0),
])
def test_limits(extra, limits, status):
    got = head(extra, **limits)
    assert not got.malformed and got.status == status


def test_fields_cookies_and_flags():
    got = head([(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"),
                (b"range", b"bytes=0-1")])
    assert (got.method, got.path, got.authority) == ("GET", "/x", "a.test")
    assert got.fields == [("accept", "*/*"), ("range", "bytes=0-1"), ("cookie", "a=1; b=2")]
    assert got.flagged
    assert not head([(b"accept", b"*/*")]).flagged
    assert head([], [(b":method", b"CONNECT"), (b":authority", b"a:1")]).malformed == ""
