"""Cache-Control / CDN-Cache-Control / Surrogate-Control parsing and precedence."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy.cachecontrol import (
    DELTA_MAX,
    parse_cache_control,
    parse_surrogate_control,
    parse_targeted,
    request_directives,
    response_directives,
)
from edge.policy.config import PolicyConfig

# (Cache-Control value, expected attributes) -- RFC 9111 §5.2, §1.2.2, §4.2.1
PARSE_CASES = [
    ("max-age=60", {"max_age": 60, "source": "cache-control"}),
    ('max-age="60"', {"max_age": 60}),  # §5.2: accept the quoted form too
    ("MAX-AGE=60", {"max_age": 60}),  # directive names are case-insensitive
    ("max-age=60, max-age=60", {"max_age": 60}),  # identical duplicates are harmless
    ("max-age=60, max-age=120", {"max_age": 0}),  # conflicting duplicates -> stale (§4.2.1)
    ("max-age=abc", {"max_age": 0}),  # invalid -> stale (§4.2.1)
    ("max-age=-1", {"max_age": 0}),
    ("max-age=1.5", {"max_age": 0}),
    ("max-age", {"max_age": 0}),
    ("max-age=5 junk", {"max_age": 0}),
    ("max-age=99999999999", {"max_age": DELTA_MAX}),  # §1.2.2 overflow -> 2^31
    ("s-maxage=10, max-age=60", {"s_maxage": 10, "max_age": 60}),
    ("s-maxage=x", {"s_maxage": 0}),
    ("no-cache", {"no_cache": True, "no_cache_fields": frozenset()}),
    ('no-cache="Set-Cookie, X-Foo"',
     {"no_cache": False, "no_cache_fields": {"set-cookie", "x-foo"}}),
    ("no-cache=Set-Cookie", {"no_cache": False, "no_cache_fields": {"set-cookie"}}),
    ('no-cache=""', {"no_cache": True}),
    ('no-cache="X", no-cache', {"no_cache": True}),
    ('no-cache="A", no-cache="B"', {"no_cache": False, "no_cache_fields": {"a", "b"}}),
    ("private", {"private": True}),
    ('private="Authorization"', {"private": False, "private_fields": {"authorization"}}),
    ("max-stale", {"max_stale": math.inf}),
    ("max-stale=30", {"max_stale": 30}),
    ("max-stale=abc", {"max_stale": None}),
    ("stale-while-revalidate=30, stale-if-error=600",
     {"stale_while_revalidate": 30, "stale_if_error": 600}),
    ("stale-while-revalidate=30, stale-while-revalidate=60", {"stale_while_revalidate": None}),
    ("stale-if-error", {"stale_if_error": None}),
    ("min-fresh=10", {"min_fresh": 10}),
    ("min-fresh=ten", {"min_fresh": None}),
    ("must-understand, no-store", {"must_understand": True, "no_store": True}),
    ("public, must-revalidate, proxy-revalidate, immutable, no-transform, only-if-cached",
     {"public": True, "must_revalidate": True, "proxy_revalidate": True, "immutable": True,
      "no_transform": True, "only_if_cached": True}),
    (",, max-age=5 ,,", {"max_age": 5}),
    ('foo="a, b", max-age=5', {"max_age": 5}),  # comma inside a quoted-string
    ('foo="a\\"b", max-age=7', {"max_age": 7}),
    ("=5, max-age=8", {"max_age": 8}),
    ("", {"source": "", "max_age": None, "items": ()}),
    (None, {"source": "", "items": ()}),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_CASES)
def test_parse_cache_control(value, expected):
    d = parse_cache_control(value)
    for attr, want in expected.items():
        assert getattr(d, attr) == want, attr


def test_rfc9111_extension_example_keeps_unknown_directive():
    # RFC 9111 §5.2.3: "Cache-Control: private, community="UCI""
    d = parse_cache_control('private, community="UCI"')
    assert d.private is True
    assert d.items == (("private", None), ("community", "UCI"))
    assert d.has("Community") and d.value("community") == "UCI"


def test_quoted_value_is_unescaped():
    assert parse_cache_control('ext="a\\"b"').value("ext") == 'a"b'


def h(*pairs):
    return tuple(pairs)


# RFC 9213 §3.1 examples, with a target list of [CDN-Cache-Control]
def test_rfc9213_example_cdn_gets_600():
    d = response_directives(
        h(("Cache-Control", "max-age=60, s-maxage=120"), ("CDN-Cache-Control", "max-age=600"))
    )
    assert (d.source, d.max_age, d.s_maxage, d.expires_applies) == (
        "cdn-cache-control", 600, None, False
    )


def test_rfc9213_example_cdn_caches_others_no_store():
    d = response_directives(h(("CDN-Cache-Control", "max-age=600"), ("Cache-Control", "no-store")))
    assert (d.no_store, d.max_age) == (False, 600)


def test_rfc9213_example_no_cdn_field_no_store():
    d = response_directives(h(("Cache-Control", "no-store"),))
    assert (d.source, d.no_store) == ("cache-control", True)


def test_rfc9213_example_none_directive():
    d = response_directives(h(("Cache-Control", "no-store"), ("CDN-Cache-Control", "none")))
    assert (d.source, d.no_store, d.has("none")) == ("cdn-cache-control", False, True)


@pytest.mark.parametrize(
    "cdn",
    ["max-age=60,", "Max-Age=60", "", "   ", "max-age=60;", 'no-cache="unterminated', "a=1 b"],
)
def test_invalid_targeted_field_falls_back_to_cache_control(cdn):
    d = response_directives(h(("Cache-Control", "max-age=5"), ("CDN-Cache-Control", cdn)))
    assert (d.source, d.max_age) == ("cache-control", 5)


TARGETED_CASES = [
    ("max-age=60;foo=bar", {"max_age": 60}),  # parameters ignored (RFC 9213 §2.1)
    ('no-cache="set-cookie, x-a"', {"no_cache": False, "no_cache_fields": {"set-cookie", "x-a"}}),
    ("no-cache", {"no_cache": True}),
    # a member of the wrong type is ignored (RFC 9213 §2.1), the others still apply
    ("max-age=1.5, public", {"max_age": None, "public": True}),
    ("max-age=-5, public", {"max_age": None}),
    ('max-age="60", no-store', {"max_age": None, "no_store": True}),
    ("max-age=(1 2), public", {"max_age": None}),
    ("no-store=1, max-age=5", {"no_store": False, "max_age": 5}),
    ('public="yes", max-age=5', {"public": False, "max_age": 5}),
    ("private, stale-while-revalidate=30", {"private": True, "stale_while_revalidate": 30}),
    ("no-store=?0, max-age=9", {"no_store": False, "max_age": 9}),
    ("max-age=1, max-age=2", {"max_age": 2}),  # sf-dictionary: last value wins
]


@pytest.mark.parametrize("cdn", ['max-age="10000"', "max-age=1.5", "max-age=-1", "no-store=5"])
def test_a_targeted_field_with_only_wrong_types_leaves_cache_control_in_charge(cdn):
    # a deliberate choice: nothing usable is treated as empty (RFC 9213 §2.2), so a typo in
    # CDN-Cache-Control never overrides Cache-Control: no-store
    d = response_directives(h(("Cache-Control", "no-store"), ("CDN-Cache-Control", cdn)))
    assert (d.source, d.no_store, d.max_age) == ("cache-control", True, None)


@pytest.mark.parametrize(("value", "expected"), TARGETED_CASES)
def test_parse_targeted(value, expected):
    d = parse_targeted(value)
    assert d is not None
    for attr, want in expected.items():
        assert getattr(d, attr) == want, attr


def test_target_list_order_and_fallthrough():
    cfg = PolicyConfig(targeted_fields=("ExampleCDN-Cache-Control", "CDN-Cache-Control"))
    both = h(("CDN-Cache-Control", "max-age=600"), ("ExampleCDN-Cache-Control", "max-age=30"))
    assert response_directives(both, cfg).max_age == 30
    bad_first = h(("CDN-Cache-Control", "max-age=600"), ("ExampleCDN-Cache-Control", "oops=,"))
    assert response_directives(bad_first, cfg).max_age == 600
    assert response_directives(both, PolicyConfig(targeted_fields=())).source == ""


def test_multiple_targeted_lines_are_combined():
    d = response_directives(h(("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "public")))
    assert (d.max_age, d.public) == (60, True)


SURROGATE_CASES = [
    # (Surrogate-Control, device token, expected (source, max_age, no_store))
    ("max-age=300", None, ("surrogate-control", 300, False)),
    ("max-age=60+30", None, ("surrogate-control", 60, False)),
    ("no-store-remote", None, ("surrogate-control", None, True)),
    ("no-store", None, ("surrogate-control", None, True)),
    ('content="ESI/1.0"', None, ("cache-control", 1, False)),
    ("max-age=60;edge1", None, ("cache-control", 1, False)),
    ("max-age=60;edge1", "edge1", ("surrogate-control", 60, False)),
    ("max-age=60;other, no-store;edge1", "edge1", ("surrogate-control", None, True)),
]


@pytest.mark.parametrize(("sc", "token", "expected"), SURROGATE_CASES)
def test_surrogate_control(sc, token, expected):
    cfg = PolicyConfig(surrogate_device_token=token)
    headers = h(("Cache-Control", "no-store, max-age=1"), ("Surrogate-Control", sc))
    d = response_directives(headers, cfg)
    if expected[0] == "cache-control":
        assert (d.source, d.max_age, d.no_store) == ("cache-control", 1, True)
    else:
        assert (d.source, d.max_age, d.no_store) == expected


def test_precedence_targeted_over_surrogate_over_cache_control():
    headers = h(
        ("Cache-Control", "max-age=1"),
        ("Surrogate-Control", "max-age=2"),
        ("CDN-Cache-Control", "max-age=3"),
    )
    assert response_directives(headers).max_age == 3
    assert response_directives(headers[:2]).max_age == 2
    no_sc = PolicyConfig(honour_surrogate_control=False)
    assert response_directives(headers[:2], no_sc).max_age == 1
    assert parse_surrogate_control("content=x") is None


REQUEST_CASES = [
    ((("Pragma", "no-cache"),), PolicyConfig(), {"no_cache": True}),
    ((("Pragma", "no-cache"), ("Cache-Control", "max-age=10")), PolicyConfig(),
     {"no_cache": False, "max_age": 10}),
    ((("Cache-Control", "no-cache, max-age=0, min-fresh=5, max-stale=10, only-if-cached"),),
     PolicyConfig(honour_request_cache_control=False),
     {"no_cache": False, "max_age": None, "min_fresh": None, "max_stale": 10,
      "only_if_cached": True}),
    ((("Pragma", "no-cache"),), PolicyConfig(honour_request_cache_control=False),
     {"no_cache": False}),
    ((("cache-control", "max-stale"), ("Cache-Control", "min-fresh=3")), PolicyConfig(),
     {"max_stale": math.inf, "min_fresh": 3}),
]


@pytest.mark.parametrize(("headers", "cfg", "expected"), REQUEST_CASES)
def test_request_directives(headers, cfg, expected):
    d = request_directives(headers, cfg)
    for attr, want in expected.items():
        assert getattr(d, attr) == want, attr


@given(st.text())
def test_cache_control_parser_never_raises(text):
    d = parse_cache_control(text)
    assert d.max_age is None or 0 <= d.max_age <= DELTA_MAX


@given(st.text(alphabet=st.characters(codec="latin-1")), st.text(), st.text())
def test_response_directives_never_raise(cc, cdn, sc):
    headers = (("Cache-Control", cc), ("CDN-Cache-Control", cdn), ("Surrogate-Control", sc))
    response_directives(headers)
    request_directives(headers)


def test_policy_config_is_hashable_and_validated():
    cfg = PolicyConfig(targeted_fields=["CDN-Cache-Control"], cacheable_methods={"GET"})
    assert hash(cfg) == hash(PolicyConfig(targeted_fields=("CDN-Cache-Control",),
                                          cacheable_methods=frozenset({"GET"})))
    assert response_directives((("CDN-Cache-Control", "max-age=3"),), cfg).max_age == 3
    with pytest.raises(ValueError):
        PolicyConfig(heuristic_fraction=1.5)
    with pytest.raises(ValueError):
        PolicyConfig(heuristic_max=-1)
    with pytest.raises(TypeError):
        PolicyConfig(targeted_fields="CDN-Cache-Control")


def test_response_directives_accepts_list_pairs():
    assert response_directives([["Cache-Control", "max-age=4"]]).max_age == 4
