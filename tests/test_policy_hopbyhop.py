"""Hop-by-hop stripping (RFC 9110 §7.6.1) and stored fields (RFC 9111 §3.1)."""

from edge.policy.cachecontrol import parse_cache_control, response_directives
from edge.policy.config import PolicyConfig
from edge.policy.headers import get_combined, set_header, split_list
from edge.policy.hopbyhop import (
    connection_listed,
    headers_for_client,
    headers_to_store,
    strip_hop_by_hop,
)

RESPONSE = (
    ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("Connection", "keep-alive, X-Internal"),
    ("connection", "Upgrade"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Trailer", "Expires"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Proxy-Authenticate", "Basic"),
    ("Proxy-Authorization", "Basic xyz"),
    ("Proxy-Authentication-Info", "a=b"),
    ("x-internal", "secret"),
    ("Content-Type", "text/plain"),
    ("Surrogate-Control", "max-age=60"),
    ("CDN-Cache-Control", "max-age=60"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("X-User", "alice"),
    ("X-Debug", "1"),
)

END_TO_END = (
    ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("Content-Type", "text/plain"),
    ("Surrogate-Control", "max-age=60"),
    ("CDN-Cache-Control", "max-age=60"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("X-User", "alice"),
    ("X-Debug", "1"),
)


def test_strip_hop_by_hop_and_connection_listed():
    assert connection_listed(RESPONSE) == {"keep-alive", "x-internal", "upgrade"}
    assert strip_hop_by_hop(RESPONSE) == END_TO_END


def test_headers_for_client_drops_surrogate_control():
    assert headers_for_client(RESPONSE) == tuple(
        p for p in END_TO_END if p[0] != "Surrogate-Control"
    )


def test_headers_to_store_default_drops_set_cookie_keeps_surrogate_control():
    d = parse_cache_control('max-age=60, private="X-User", no-cache="x-debug"')
    assert headers_to_store(RESPONSE, d) == (
        ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Content-Type", "text/plain"),
        ("Surrogate-Control", "max-age=60"),
        ("CDN-Cache-Control", "max-age=60"),
    )


def test_store_set_cookie_keeps_it_only_in_public_responses():
    cfg = PolicyConfig(store_set_cookie=True)
    d = response_directives(RESPONSE, cfg)  # CDN-Cache-Control: max-age=60, not public
    assert all(n != "Set-Cookie" for n, _ in headers_to_store(RESPONSE, d, cfg))
    public = parse_cache_control("public, max-age=60")
    assert headers_to_store(RESPONSE, public, cfg) == END_TO_END
    d2 = parse_cache_control('no-cache="Set-Cookie"')
    assert ("Set-Cookie", "a=1") not in headers_to_store(RESPONSE, d2, cfg)


def test_header_helpers():
    assert get_combined((("A", " 1 "), ("a", "2")), "A") == "1, 2"
    assert get_combined((), "A") is None
    assert set_header((("A", "1"), ("B", "2"), ("a", "3")), "A", "9") == (("A", "9"), ("B", "2"))
    assert split_list(' a , "b, c" ,, d ') == ["a", '"b, c"', "d"]
    assert split_list('"x\\", y", z') == ['"x\\", y"', "z"]
