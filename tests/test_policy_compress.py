"""edge.policy.compress and [edge.compression]: table-driven."""

from __future__ import annotations

import pytest

from edge.policy.compress import choose, codings_for, encoded_headers, suffixed_etag
from geoconfig.compressconfig import CompressionSettings, parse_compression
from geoconfig.validate import ConfigError

S = CompressionSettings()
HTML = (("Content-Type", "text/html; charset=utf-8"),)


@pytest.mark.parametrize(("status", "headers", "length", "settings", "expected"), [
    (200, HTML, 1000, S, ("br", "gzip")),
    (200, (("Content-Type", "application/json"),), 1000, S, ("br", "gzip")),
    (200, (("Content-Type", "TEXT/CSS"),), 1000, S, ("br", "gzip")),  # family, any case
    (200, (("Content-Type", "image/svg+xml"),), 1000, S, ("br", "gzip")),
    (200, (("Content-Type", "image/png"),), 1000, S, ()),  # not listed
    (200, (), 1000, S, ()),  # no Content-Type
    (200, HTML, 255, S, ()),  # below min_bytes
    (200, HTML, 256, S, ("br", "gzip")),
    (200, HTML, S.max_bytes + 1, S, ()),
    (206, HTML, 1000, S, ()),  # only 200
    (404, HTML, 1000, S, ()),
    (200, (*HTML, ("Content-Encoding", "gzip")), 1000, S, ()),  # never twice
    (200, (*HTML, ("Content-Encoding", "identity")), 1000, S, ("br", "gzip")),
    (200, (*HTML, ("Content-Range", "bytes 0-9/100")), 1000, S, ()),
    (200, (*HTML, ("Cache-Control", "max-age=60, no-transform")), 1000, S, ()),
    (200, (*HTML, ("Cache-Control", "public")), 1000, S, ("br", "gzip")),
    (200, HTML, 1000, CompressionSettings(enabled=False), ()),
    (200, HTML, 1000, CompressionSettings(codings=("gzip",)), ("gzip",)),
    (200, (("Content-Type", "application/json"),), 1000,
     CompressionSettings(types=("text/html",)), ()),
])
def test_codings_for(status, headers, length, settings, expected):
    assert codings_for(status, headers, length, settings) == expected


@pytest.mark.parametrize(("accept", "no_transform", "expected"), [
    (None, False, "identity"),  # absent: identity (nginx, CDNs)
    ("", False, "identity"),
    ("gzip", False, "gzip"),
    ("x-gzip", False, "gzip"),
    ("br", False, "br"),
    ("gzip, br", False, "br"),  # tie: the edge's preference
    ("gzip, deflate, br, zstd", False, "br"),
    ("br;q=0.5, gzip", False, "gzip"),  # q-values honoured
    ("br;q=0.9, gzip;q=0.8", False, "br"),
    ("br;q=0, gzip;q=0", False, "identity"),
    ("BR;Q=1", False, "br"),
    ("*", False, "br"),
    ("*;q=0.5, br;q=0", False, "gzip"),
    ("gzip;q=0.5, identity", False, "identity"),  # identity preferred explicitly
    ("gzip, identity;q=0.5", False, "gzip"),
    ("identity;q=0", False, "identity"),  # nothing else acceptable: still identity
    ("deflate", False, "identity"),
    ("gzip;q=abc", False, "identity"),  # a bad q is 0
    ("gzip;q=2", False, "identity"),
    ("br", True, "identity"),  # request no-transform
])
def test_choose(accept, no_transform, expected):
    assert choose(accept, ("br", "gzip", "identity"), no_transform) == expected


def test_choose_only_among_available():
    assert choose("br", ("gzip", "identity")) == "identity"
    assert choose("br, gzip", ("gzip", "identity")) == "gzip"


@pytest.mark.parametrize(("etag", "coding", "expected"), [
    ('"abc"', "br", '"abc-br"'),
    ('W/"abc"', "gzip", 'W/"abc-gzip"'),
    ('""', "br", '"-br"'),
    ("abc", "br", None),  # malformed: dropped
    ('"a"b"', "br", None),
    ('W/', "br", None),
])
def test_suffixed_etag(etag, coding, expected):
    assert suffixed_etag(etag, coding) == expected


@pytest.mark.parametrize(("headers", "coding", "expected"), [
    ((("Content-Type", "text/html"), ("ETag", '"v1"'), ("Content-Length", "9")), "br",
     (("Content-Type", "text/html"), ("Content-Encoding", "br"), ("ETag", '"v1-br"'),
      ("Vary", "Accept-Encoding"))),
    ((("ETag", "bad"), ("Vary", "accept-encoding")), "gzip",
     (("Vary", "accept-encoding"), ("Content-Encoding", "gzip"))),
    ((("Vary", "Accept, Accept-Encoding"), ("Content-Encoding", "identity")), "gzip",
     (("Vary", "Accept, Accept-Encoding"), ("Content-Encoding", "gzip"))),
    ((("ETag", '"v1"'), ("Vary", "Accept")), "identity",
     (("ETag", '"v1"'), ("Vary", "Accept"), ("Vary", "Accept-Encoding"))),
])
def test_encoded_headers(headers, coding, expected):
    assert encoded_headers(headers, coding) == expected


def test_config_defaults_and_errors():
    assert parse_compression({}) == CompressionSettings()
    got = parse_compression({"codings": ["gzip"], "types": ["Text/HTML"], "min_bytes": 0,
                             "enabled": False, "brotli_quality": 11})
    assert got == CompressionSettings(False, ("gzip",), ("text/html",), 0, S.max_bytes, 6, 11)
    for table, key in [({"codings": ["zstd"]}, "edge.compression.codings[0]"),
                       ({"types": ["html"]}, "edge.compression.types[0]"),
                       ({"types": ["*/*"]}, "edge.compression.types[0]"),
                       ({"gzip_level": 0}, "edge.compression.gzip_level"),
                       ({"brotli_quality": 12}, "edge.compression.brotli_quality"),
                       ({"min_bytes": 10, "max_bytes": 5}, "edge.compression.min_bytes"),
                       ({"level": 1}, "edge.compression")]:
        with pytest.raises(ConfigError) as info:
            parse_compression(table)
        assert key in str(info.value)
