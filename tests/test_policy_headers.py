"""``weighted_members``: the q-value lists of Accept-Encoding and Accept-Language (RFC 9110
§12.4.2), shared by the compression choice and the Vary normalisation."""

import pytest

from edge.policy.compress import parse_accept_encoding
from edge.policy.headers import weighted_members
from edge.policy.vary import normalise_accept_encoding


@pytest.mark.parametrize(("value", "expected"), [
    ("gzip", [("gzip", 1.0)]),
    ("GZip;q=0.5, br", [("gzip", 0.5), ("br", 1.0)]),
    ("br; Q = 0.250 ", [("br", 0.25)]),
    ("gzip;q=1.000", [("gzip", 1.0)]),
    ("gzip;q=0", [("gzip", 0.0)]),
    ("gzip;q=0.", [("gzip", 0.0)]),
    # not qvalues: they count as 0, never as a preference
    ("gzip;q=1.5", [("gzip", 0.0)]),
    ("gzip;q=.5", [("gzip", 0.0)]),
    ("gzip;q=1e0", [("gzip", 0.0)]),
    ("gzip;q=nan", [("gzip", 0.0)]),
    ("gzip;q=0.1234", [("gzip", 0.0)]),
    ("gzip;q=1.001", [("gzip", 0.0)]),
    ("gzip;q=", [("gzip", 0.0)]),
    ("gzip;q=-0", [("gzip", 0.0)]),
    # empty members and parameters other than q
    (", ,gzip;level=9,", [("gzip", 1.0)]),
    ("", []),
    (";q=0.5", []),
])
def test_weighted_members(value: str, expected: list[tuple[str, float]]) -> None:
    assert weighted_members(value) == expected


@pytest.mark.parametrize(("value", "choice", "forwarded"), [
    ("gzip;q=1e0, br", {"gzip": 0.0, "br": 1.0}, "br"),
    ("x-gzip;q=0.5, gzip;q=0.2", {"gzip": 0.5}, "gzip"),
    ("*;q=0.5, gzip;q=0", {"*": 0.5, "gzip": 0.0}, "br, zstd, deflate"),
])
def test_both_users_read_the_same_weights(value: str, choice: dict[str, float],
                                          forwarded: str) -> None:
    assert parse_accept_encoding(value) == choice
    assert normalise_accept_encoding([value]) == forwarded
