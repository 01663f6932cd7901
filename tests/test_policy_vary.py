"""Secondary cache keys (RFC 9111 §4.1)."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.policy.vary import normalise_value, vary_canonical, vary_fields, vary_key


def test_no_vary_means_no_secondary_key():
    assert vary_key(None, (("Accept", "x"),)) == ""
    assert vary_key((), ()) == ""
    assert vary_key(" , ", ()) == ""


@pytest.mark.parametrize("vary", ["*", "Accept, *", ("Accept", "*"), ("*",)])
def test_vary_star_never_matches(vary):
    assert vary_key(vary, (("Accept", "x"),)) is None
    assert vary_fields(vary) is None


def test_field_names_case_order_and_lines_do_not_matter():
    req = (("Accept-Language", "en"), ("Accept", "text/html"))
    keys = {
        vary_key("Accept, Accept-Language", req),
        vary_key("accept-language,ACCEPT", req),
        vary_key(("Accept-Language", "Accept"), req),
        vary_key(("Accept", "Accept, accept-language"), req),
    }
    assert len(keys) == 1
    assert vary_fields("Accept-Language, accept") == ("accept", "accept-language")


def test_canonical_form_and_hash_are_exact():
    req = (("accept-encoding", "br, GZIP"), ("X-Tenant", "A"))
    canonical = vary_canonical("Accept-Encoding, X-Tenant, X-Missing", req)
    assert canonical == '[["accept-encoding","br,gzip"],["x-missing",null],["x-tenant","A"]]'
    assert vary_key("Accept-Encoding, X-Tenant, X-Missing", req) == hashlib.sha256(
        canonical.encode()
    ).hexdigest()


# (field name, lines A, lines B, same key?)
EQUIVALENCE_CASES = [
    ("Accept", ["text/html, application/json"], ["text/html,application/json"], True),
    ("Accept", ["text/html,  application/json "], ["text/html, application/json"], True),
    ("Accept", ["text/html", "application/json"], ["text/html, application/json"], True),
    ("Accept", ["text/html,,application/json"], ["text/html, application/json"], True),
    ("Accept", ["text/html;  q=0.9"], ["text/html; q=0.9"], True),
    ("Accept", ["text/html"], ["TEXT/HTML"], False),  # other values compare exactly
    ("Accept", ["text/html, application/json"], ["application/json, text/html"], False),
    ("X-Q", ['"a  b"'], ['"a b"'], False),  # quoted-strings kept verbatim
    ("X-Q", ['"a,b"'], ['"a, b"'], False),
    ("Accept-Encoding", ["gzip, br"], ["br, gzip"], True),
    ("Accept-Encoding", ["GZip, BR"], ["br,gzip"], True),
    ("Accept-Encoding", ["gzip;q=1.0, br"], ["br, gzip ; Q=1.0"], True),
    ("Accept-Encoding", ["gzip", "br"], ["br, gzip"], True),
    ("Accept-Encoding", ["gzip, gzip"], ["gzip"], True),
    ("Accept-Encoding", ["gzip;q=0"], ["gzip"], False),  # q-values are kept
    ("Accept-Encoding", [""], [], False),  # present-but-empty differs from absent
]


@pytest.mark.parametrize(("name", "a", "b", "same"), EQUIVALENCE_CASES)
def test_value_normalisation(name, a, b, same):
    req_a = tuple((name, v) for v in a)
    req_b = tuple((name.upper(), v) for v in b)
    assert (vary_key(name, req_a) == vary_key(name, req_b)) is same


def test_absent_and_empty_are_distinct_and_unrelated_headers_ignored():
    assert normalise_value("Accept", []) is None
    assert normalise_value("Accept", [""]) == ""
    base = (("Accept", "a"),)
    assert vary_key("Accept", base) == vary_key("Accept", (*base, ("Cookie", "x")))
    assert vary_key("Accept", base) != vary_key("Accept", ())


@given(st.lists(st.tuples(st.text(), st.text()), max_size=6), st.text())
def test_vary_key_never_raises_and_is_deterministic(headers, vary):
    headers = tuple(headers)
    key = vary_key(vary, headers)
    assert key == vary_key(vary, headers)
    assert key is None or key == "" or len(key) == 64
