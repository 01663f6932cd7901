"""POST answers stored for later GETs (#12 item 10; RFC 9111 §3, RFC 9110 §9.3.3), through a
real edge and origin: only with ``edge.cacheable_methods`` including "POST" (off by default),
explicit freshness and a Content-Location equal to the target."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from edgeutil import edge_env, member, topology_dict

from geoconfig.topology import parse_topology
from geoconfig.validate import ConfigError

__all__ = ["edge_env"]

POST_ON = {"cacheable_methods": ["GET", "HEAD", "POST"]}
FRESH = [("Cache-Control", "max-age=60"), ("Content-Location", "/form?x=1")]


async def test_a_post_answer_serves_later_gets(edge_env):
    env = await edge_env(**POST_ON)
    env.origin.route("/form", body=b"result", headers=FRESH)
    r = await env.request("POST", "/form?x=1", data=b"field=1")
    assert (r.status, r.body) == (200, b"result")
    assert r.cache_status == member("fwd=method", "fwd-status=200", "stored")
    assert env.origin.last("/form?x=1").body == b"field=1"  # the POST itself was forwarded
    r = await env.get("/form?x=1")
    assert (r.status, r.body, r.cache_status) == (200, b"result", member("hit", "ttl=60"))
    r = await env.request("HEAD", "/form?x=1")
    assert (r.status, r.cache_status) == (200, member("hit", "ttl=60"))
    r = await env.request("POST", "/form?x=1", data=b"field=2")  # never answered from cache
    assert r.cache_status == member("fwd=method", "fwd-status=200", "stored")
    assert env.origin.count("/form?x=1") == 2


async def test_a_post_answer_replaces_what_was_stored(edge_env):
    env = await edge_env(**POST_ON)
    route = env.origin.route("/form", body=b"old", headers=FRESH)
    assert (await env.get("/form?x=1")).body == b"old"
    route.body = b"new"
    assert (await env.request("POST", "/form?x=1", data=b"")).body == b"new"
    r = await env.get("/form?x=1")
    assert (r.body, r.cache_status) == (b"new", member("hit", "ttl=60"))


@pytest.mark.parametrize(("edge", "headers"), [
    ({}, FRESH),  # off by default
    (POST_ON, [("Cache-Control", "max-age=60")]),  # no Content-Location
    (POST_ON, [("Cache-Control", "max-age=60"), ("Content-Location", "/elsewhere")]),
    (POST_ON, [("Content-Location", "/form?x=1"),
               ("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")]),  # heuristic only
])
async def test_post_answers_not_stored(edge_env, edge, headers):
    env = await edge_env(**edge)
    env.origin.route("/form", body=b"result", headers=headers)
    r = await env.request("POST", "/form?x=1", data=b"")
    assert r.cache_status == member("fwd=method", "fwd-status=200")
    r = await env.get("/form?x=1")
    assert r.cache_status.startswith(member("fwd=uri-miss"))
    assert env.origin.count("/form?x=1") == 2


@pytest.mark.parametrize("methods", [["GET"], ["GET", "HEAD", "PUT"], ["POST"]])
def test_cacheable_methods_must_be_get_head_and_maybe_post(methods):
    data = topology_dict([SimpleNamespace(name="o", port=1)], {"cacheable_methods": methods})
    with pytest.raises(ConfigError, match=r"edge\.cacheable_methods"):
        parse_topology(data)
