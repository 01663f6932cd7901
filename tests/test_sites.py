"""[[sites]] configuration and the pure site rules (edge.policy.site), table-driven."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from edge.policy.site import SiteTable, cookies_of, redirect_location, site_key, with_header
from geoconfig.sites import CacheKeyRules
from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError
from tests.edgeutil import DEMO


def demo(**extra: Any) -> dict[str, Any]:
    with DEMO.open("rb") as f:
        data = tomllib.load(f)
    data.update(extra)
    return data


def site(**kw: Any) -> dict[str, Any]:
    return {"name": "www", "hosts": ["www.example.com"],
            "origins": [{"name": "o", "host": "127.0.0.1", "port": 8080}], **kw}


TABLE = SiteTable.build([(["www.example.com", "example.com"], "www"),
                         (["*.example.com"], "wild"), (["*.deep.example.com"], "deep")],
                        default="default")


@pytest.mark.parametrize(("authority", "expected"), [
    ("www.example.com", "www"),
    ("WWW.Example.COM:8443", "www"),
    ("example.com", "www"),
    ("a.example.com", "wild"),
    ("a.b.example.com", "wild"),
    ("x.deep.example.com", "deep"),  # the longer wildcard wins
    ("deep.example.com", "wild"),
    ("badexample.com", "default"),
    ("example.org", "default"),
    ("[2001:db8::1]:80", "default"),
    ("", "default"),
])
def test_host_selection(authority: str, expected: str):
    assert TABLE.select(authority) == expected


def test_no_default_site_selects_nothing():
    assert SiteTable.build([(["a.test"], 1)]).select("b.test") is None


@pytest.mark.parametrize("authority", ["a.test", "A.TEST:8080", "[::1]:80", ""])
def test_without_sites_every_host_is_the_default_sites(authority: str):
    assert SiteTable.build([], default="dflt").select(authority) == "dflt"
    assert SiteTable.build([]).select(authority) is None


def header_of(headers: dict[str, str]):
    return lambda name: headers.get(name)


@pytest.mark.parametrize(("rules", "key", "headers", "expected"), [
    (CacheKeyRules(), "https://h/p?b=2&a=1", {}, "https://h/p?b=2&a=1"),
    (CacheKeyRules(sort_query=True), "https://h/p?b=2&a=1", {}, "https://h/p?a=1&b=2"),
    (CacheKeyRules(query="none"), "https://h/p?b=2&a=1", {}, "https://h/p"),
    (CacheKeyRules(query="keep", query_params=("a",)), "https://h/p?b=2&a=1&a=3", {},
     "https://h/p?a=1&a=3"),
    (CacheKeyRules(query="ignore", query_params=("utm_source", "fbclid")),
     "http://h/p?utm_source=x&id=7&fbclid=y", {}, "http://h/p?id=7"),
    (CacheKeyRules(query="ignore", query_params=("x",)), "http://h/p?x=1", {}, "http://h/p"),
    (CacheKeyRules(headers=("x-device",)), "http://h/p", {"x-device": "mobile"},
     "http://h/p#h:x-device=mobile"),
    (CacheKeyRules(headers=("x-device",)), "http://h/p", {}, "http://h/p#h:x-device=-"),
    (CacheKeyRules(cookies=("lang",)), "http://h/p", {"cookie": "a=1; lang=fr; lang=de"},
     "http://h/p#c:lang=fr"),
    (CacheKeyRules(headers=("x-a",), cookies=("c",)), "http://h/p", {"x-a": "1&2"},
     "http://h/p#h:x-a=1%262&c:c=-"),
])
def test_site_key(rules: CacheKeyRules, key: str, headers: dict[str, str], expected: str):
    assert site_key(key, rules, header_of(headers)) == expected


def test_cookies_redirect_and_header_insertion():
    assert cookies_of("a=1;b=2; a=3; junk") == {"a": "1", "b": "2"}
    assert redirect_location("www.example.com:8080", "/a?b", 443) == "https://www.example.com/a?b"
    assert redirect_location("[::1]:80", "/", 8443) == "https://[::1]:8443/"
    assert with_header(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", b"X: y\r\n") == (
        b"HTTP/1.1 200 OK\r\nX: y\r\nA: b\r\n\r\n")


def test_sites_parse_with_overrides_and_defaults():
    t = parse_topology(demo(sites=[
        site(default_ttl=30, purge_token="site-token-1", regions=["eu-west"],
             tls={"cert": "c.pem", "key": "k.pem", "hsts": "max-age=60", "redirect_http": True},
             cache_key={"query": "ignore", "query_params": ["utm"], "sort_query": True,
                        "headers": ["X-Device"], "cookies": ["lang"]}),
        site(name="shop", hosts=["*.Shop.Example.com."]),
    ]), source="/etc/geoedge/t.toml")
    www, shop = t.cdn.sites
    assert www.edge.default_ttl == 30 and shop.edge.default_ttl == t.cdn.edge.default_ttl
    assert www.edge.purge_token == "site-token-1"
    assert www.regions == ("eu-west",) and shop.regions == ()
    assert str(www.tls.cert) == "/etc/geoedge/c.pem" and www.tls.redirect_http
    assert www.cache_key.headers == ("x-device",)
    assert shop.hosts == ("*.shop.example.com",)
    assert t.cdn.tls.listen is None and t.cdn.tls.unknown_host_status == 421


@pytest.mark.parametrize(("sites", "edge", "key"), [
    ([site(hosts=[])], {}, "sites[0].hosts"),
    ([site(hosts=["bad host"])], {}, "sites[0].hosts[0]"),
    ([site(hosts=["*.com*"])], {}, "sites[0].hosts[0]"),
    ([site(hosts=["*.com"])], {}, "sites[0].hosts[0]"),
    ([site(), site(name="b")], {}, "sites[1].hosts[0]"),  # a host in two sites
    ([site(), site()], {}, "sites[1].name"),
    ([site(origins=[])], {}, "sites[0].origins"),
    ([site(origins=[{"name": "o", "host": "h"}])], {}, "sites[0].origins[0].port"),
    ([site(regions=["mars"])], {}, "sites[0].regions[0]"),
    ([site(default_ttl=-1)], {}, "sites[0].default_ttl"),
    ([site(lb="random")], {}, "sites[0].lb"),
    ([site(max_connections=5)], {}, "sites[0].max_connections"),  # process-wide
    ([site(colour="red")], {}, "sites[0].colour"),
    ([site(tls={"cert": "c.pem"})], {}, "sites[0].tls.key"),
    ([site(tls={"hsts": "yes"})], {}, "sites[0].tls.hsts"),
    ([site(tls={"alt_cert": "a.pem", "alt_key": "a.key"})], {}, "sites[0].tls.cert"),
    ([site(tls={"cert": "c.pem", "key": "k.pem", "alt_cert": "a.pem"})], {},
     "sites[0].tls.alt_key"),
    ([site(cache_key={"query": "some"})], {}, "sites[0].cache_key.query"),
    ([site(cache_key={"query_params": ["a"]})], {}, "sites[0].cache_key.query_params"),
    ([site(cache_key={"cookies": ["a=b"]})], {}, "sites[0].cache_key.cookies[0]"),
    ([], {"tls_listen": "nowhere"}, "edge.tls_listen"),
    ([], {"tls_cert": "c.pem"}, "edge.tls_key"),
    ([], {"unknown_host_status": 400}, "edge.unknown_host_status"),
    ([], {"tls_ticket_rotate": 1}, "edge.tls_ticket_rotate"),
])
def test_bad_site_config_names_the_key(sites: list[Any], edge: dict[str, Any], key: str):
    data = demo(sites=sites)
    data["edge"] = {**data["edge"], **edge}
    with pytest.raises(ConfigError) as err:
        parse_topology(data)
    assert err.value.key == key


def test_tls_listen_forms():
    for text, expected in ((":8443", ("", 8443)), ("127.0.0.1:443", ("127.0.0.1", 443))):
        data = demo()
        data["edge"] = {**data["edge"], "tls_listen": text}
        assert parse_topology(data).cdn.tls.listen == expected
