"""Pure tables for the origin's small policies: HTTP-dates, rules, Content-Type, URL-path
safety, negotiation, the ETag cache, request stats and the virtual files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from geoconfig.cdnconfig import ContentRule
from geoconfig.httpdate import format_http_date, parse_http_date
from origin.headers import content_type, find_rule, new_type_table, rule_headers
from origin.negotiate import accepts_gzip, pick_language, weighted
from origin.state import RequestStats
from origin.store import DiskFile, EtagCache, etag_of_bytes, safe_segments
from origin.virtual import VIRTUAL_MTIME, VIRTUAL_SIZES, build_virtual_files, expected_bytes

T = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example)


@pytest.mark.parametrize(("text", "expected"), [
    ("Sun, 06 Nov 1994 08:49:37 GMT", T),
    ("Sunday, 06-Nov-94 08:49:37 GMT", T),
    ("Sun Nov  6 08:49:37 1994", T),
    ("sun, 06 nov 1994 08:49:37 gmt", None),  # the grammar is case-sensitive
    ("Sun, 06 Nov 1994 08:49:37 gmt", None),
    ("  Sun, 06 Nov 1994 08:49:37 GMT ", T),  # whitespace around the value is not in it
    ("Sun,  06 Nov 1994 08:49:37 GMT", None),  # runs of spaces: invalid
    ("Thu, 18  Aug  2050 02:01:18 GMT", None),
    ("Sun, 6 Nov 1994 08:49:37 GMT", None),
    ("Sun, 06 Nov 1994 8:49:37 GMT", None),
    ("Sun Nov 6 08:49:37 1994", None),  # asctime: SP DIGIT for a one-digit day
    ("Sunday,  06-Nov-94 08:49:37 GMT", None),
    ("Thursday, 01-Jan-70 00:00:00 GMT", 3155760000),  # 2070: not > 50 years ahead of 2026
    ("Sun, 06 Nov 1994 08:49:37 UTC", None),
    ("Sun, 06 Nov 1994 08:49:37 +0000", None),
    ("Sun, 31 Feb 1994 08:49:37 GMT", None),
    ("Sun, 06 Nov 1994 24:00:00 GMT", None),
    ("Xyz, 06 Nov 1994 08:49:37 GMT", None),
    ("06 Nov 1994 08:49:37 GMT", None),
    ("Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", None),
    ("Sun, \u06606 Nov 1994 08:49:37 GMT", None),
    ("0", None),
    ("", None),
    (None, None),
])
def test_parse_http_date(text: str | None, expected: int | None) -> None:
    assert parse_http_date(text, now=1_790_000_000) == expected


def test_format_http_date_round_trips() -> None:
    assert format_http_date(T) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert format_http_date(T + 0.999) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(VIRTUAL_MTIME)) == VIRTUAL_MTIME
    assert format_http_date(VIRTUAL_MTIME) == "Thu, 01 Jan 2026 00:00:00 GMT"


RULES = (
    ContentRule("/static/*", "public, max-age=86400", None, "static"),
    ContentRule("/static/*.css", "no-cache", None, "never-used"),
    ContentRule("/*.html", "public, max-age=60", "max-age=600", "html"),
    ContentRule("/private/*", "private", None, None),
    ContentRule("/Upper/*", "public, max-age=1", None, ""),
)


@pytest.mark.parametrize(("path", "expected"), [
    ("/static/style.css", {"Cache-Control": "public, max-age=86400", "Surrogate-Key": "static"}),
    ("/static/a/b/c.png", {"Cache-Control": "public, max-age=86400", "Surrogate-Key": "static"}),
    ("/index.html", {"Cache-Control": "public, max-age=60", "CDN-Cache-Control": "max-age=600",
                     "Surrogate-Key": "html"}),
    ("/docs/deep/page.html", {"Cache-Control": "public, max-age=60",
                              "CDN-Cache-Control": "max-age=600", "Surrogate-Key": "html"}),
    ("/private/x", {"Cache-Control": "private"}),
    ("/Upper/x", {"Cache-Control": "public, max-age=1"}),  # empty surrogate key: not sent
    ("/upper/x", {}),  # case-sensitive
    ("/data.bin", {}),
    ("/static", {}),
])
def test_rule_headers_first_match_wins(path: str, expected: dict[str, str]) -> None:
    assert rule_headers(RULES, path) == expected


def test_find_rule_none_without_rules() -> None:
    assert find_rule((), "/x") is None


@pytest.mark.parametrize(("name", "expected"), [
    ("/index.html", "text/html; charset=utf-8"),
    ("/static/style.css", "text/css; charset=utf-8"),
    ("/a.txt", "text/plain; charset=utf-8"),
    ("/a.json", "application/json; charset=utf-8"),
    ("/a.svg", "image/svg+xml; charset=utf-8"),
    ("/static/logo.png", "image/png"),
    ("/big/5mib.bin", "application/octet-stream"),
    ("/backup.tar.gz", "application/octet-stream"),
    ("/no-extension", "application/octet-stream"),
    ("/font.unknownext", "application/octet-stream"),
])
def test_content_type(name: str, expected: str) -> None:
    assert content_type(new_type_table(), name) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/", [""]),
    ("/index.html", ["index.html"]),
    ("/docs/", ["docs", ""]),
    ("/a/b.txt", ["a", "b.txt"]),
    ("/..", None),
    ("/../etc/passwd", None),
    ("/a/../b", None),
    ("/a/./b", None),
    ("/.git/config", None),
    ("/.hidden", None),
    ("//etc/passwd", None),
    ("/a//b", None),
    ("/a\\..\\b", None),
    ("/a\x00b", None),
    ("relative", None),
    ("", None),
])
def test_safe_segments(path: str, expected: list[str] | None) -> None:
    assert safe_segments(path) == expected


@pytest.mark.parametrize(("header", "expected"), [
    (None, "en"),
    ("", "en"),
    ("fr", "fr"),
    ("fr-CA", "fr"),
    ("FR-ca", "fr"),
    ("de;q=0.5, es", "es"),
    ("de;q=0.5, es;q=0.4", "de"),
    ("it, ja;q=0.1", "ja"),
    ("it", "en"),
    ("*", "en"),
    ("fr;q=0, de;q=0.1", "de"),
    ("fr;q=bogus", "fr"),
    ("ja;q=2", "ja"),
])
def test_pick_language(header: str | None, expected: str) -> None:
    assert pick_language(header, ("en", "fr", "de", "es", "ja"), "en") == expected


@pytest.mark.parametrize(("header", "expected"), [
    (None, False),
    ("", False),
    ("identity", False),
    ("gzip", True),
    ("GZIP;q=0.5", True),
    ("x-gzip", True),
    ("gzip;q=0", False),
    ("br, gzip;q=0.1", True),
    ("*", True),
    ("*;q=0", False),
    ("*, gzip;q=0", False),
    ("deflate, br", False),
])
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_weighted_is_stable_by_q() -> None:
    assert weighted("a;q=0.5, b, c;q=0.5, d;q=nan") == [
        ("b", 1.0), ("d", 1.0), ("a", 0.5), ("c", 0.5)]


def _disk(path: str, mtime_ns: int, size: int) -> DiskFile:
    return DiskFile("/x", path, -1, size, mtime_ns)


def test_etag_cache_is_keyed_by_mtime_and_size_and_bounded() -> None:
    cache = EtagCache(max_entries=2)
    cache.put(_disk("/r/a", 1, 10), '"a"')
    assert cache.get(_disk("/r/a", 1, 10)) == '"a"'
    assert cache.get(_disk("/r/a", 2, 10)) is None
    assert cache.get(_disk("/r/a", 1, 11)) is None
    cache.put(_disk("/r/a", 2, 10), '"a2"')
    assert cache.get(_disk("/r/a", 2, 10)) == '"a2"'
    assert len(cache) == 1
    cache.put(_disk("/r/b", 1, 1), '"b"')
    cache.put(_disk("/r/c", 1, 1), '"c"')
    assert len(cache) == 2
    assert cache.get(_disk("/r/a", 2, 10)) is None  # the oldest was dropped


def test_request_stats_are_bounded() -> None:
    stats = RequestStats(max_keys=2)
    for url in ("/a?x=1", "/a?x=2", "/b", "/c", "/a?x=1"):
        stats.hit(url.partition("?")[0], url)
    snap = stats.snapshot()
    assert snap["requests"] == {"/a": 3, "/b": 1}
    assert snap["requests_by_url"] == {"/a?x=1": 2, "/a?x=2": 1}
    assert snap["dropped"] == 3  # "/c" in the path map; "/b" and "/c" in the URL map


def test_etag_format() -> None:
    assert etag_of_bytes(b"") == '"' + hashlib.sha256(b"").hexdigest()[:32] + '"'


def test_virtual_files_are_deterministic() -> None:
    files = build_virtual_files()
    assert set(files) == set(VIRTUAL_SIZES) == {"/big/1k.bin", "/big/64k.bin", "/big/5mib.bin"}
    for path, f in files.items():
        assert len(f.data) == VIRTUAL_SIZES[path]
        assert f.data == expected_bytes(path)
        assert f.etag == etag_of_bytes(f.data)
        assert f.last_modified == VIRTUAL_MTIME
    assert len(files["/big/5mib.bin"].data) == 5 * 1024 * 1024
    assert files["/big/1k.bin"].data != files["/big/64k.bin"].data[:1024]
    # the documented recipe, recomputed independently
    assert files["/big/1k.bin"].data == hashlib.shake_256(
        b"geoedge virtual file /big/1k.bin").digest(1024)
    assert expected_bytes("/big/5mib.bin", 10) == files["/big/5mib.bin"].data[:10]


def test_safe_segments_never_escape(tmp_path: Path) -> None:
    for path in ("/a/b", "/", "/x.txt"):
        segments = safe_segments(path)
        assert segments is not None
        assert tmp_path.joinpath(*segments).resolve().is_relative_to(tmp_path.resolve())
