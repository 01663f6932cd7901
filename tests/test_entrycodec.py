"""Shared-tier entry codec: round trips of real entries, a property test, every malformation."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.policy.freshness import StoredMeta, current_age, stored_lifetime
from edge.proxy import EdgeApp
from edge.store import Entry
from edge.tier.entrycodec import MAGIC, MAX_JSON_BYTES, DecodedEntry, decode_entry, encode_entry
from geoconfig.cdnconfig import EdgeSettings
from geoconfig.httpdate import format_http_date

T0 = 1_750_000_000.0
KEY = "http://example.com/a?b=c"
APP = EdgeApp("codec", EdgeSettings(), None, lambda: T0)  # type: ignore[arg-type]
BUILD = APP.make_entry  # the proxy's own entry builder


def make(meta: StoredMeta, body: bytes = b"body", tags: frozenset[str] = frozenset(),
         key: str = KEY, soft: bool = False) -> Entry:
    """An entry exactly as the proxy builds it."""
    entry = BUILD(key, meta, body, tags)
    entry.soft_purged = soft
    return entry


def rebuild(decoded: DecodedEntry) -> Entry:
    """What the shared-tier reader does with a decoded entry."""
    entry = BUILD(decoded.key, decoded.meta, decoded.body, decoded.surrogate_keys)
    entry.soft_purged = decoded.soft_purged
    return entry


def meta(*headers: tuple[str, str], status: int = 200, request_time: float = T0 - 0.25,
         response_time: float = T0, vary_key: str = "") -> StoredMeta:
    return StoredMeta(status, tuple(headers), request_time, response_time, "GET", vary_key)


DATE = ("Date", format_http_date(T0))
ALL_BYTES = bytes(range(256))

ENTRIES: dict[str, Entry] = {
    "max-age": make(meta(DATE, ("Cache-Control", "max-age=60"), ("Content-Type", "text/plain"))),
    "latin-1 header values": make(meta(
        DATE, ("Cache-Control", "max-age=60"), ("X-Name", "caf\xe9 \xff\xa0 d\xe9j\xe0 vu"),
        ("Content-Disposition", "attachment; filename=\"r\xe9sum\xe9.pdf\""))),
    "binary body, all 256 byte values": make(
        meta(DATE, ("Cache-Control", "s-maxage=30, max-age=5")), body=ALL_BYTES * 3),
    "empty body 204": make(meta(DATE, ("Cache-Control", "max-age=10"), status=204), body=b""),
    "empty body 200": make(meta(DATE, ("Cache-Control", "max-age=10")), body=b""),
    "upstream Age and old Date (initial age > 0)": make(meta(
        ("Date", format_http_date(T0 - 40)), ("Age", "25"), ("Cache-Control", "max-age=100"))),
    "Expires": make(meta(DATE, ("Expires", format_http_date(T0 + 300)))),
    "heuristic from Last-Modified": make(meta(
        DATE, ("Last-Modified", format_http_date(T0 - 86_400 * 3)))),
    "no-cache (fast_until 0) with validator": make(meta(
        DATE, ("Cache-Control", "no-cache"), ("ETag", '"v1"'))),
    "stale windows": make(meta(
        DATE, ("Cache-Control", "max-age=5, stale-while-revalidate=30, stale-if-error=7200"))),
    "404 error page": make(meta(DATE, ("Cache-Control", "max-age=5"), status=404), body=b"nf"),
    "vary variant": make(meta(
        DATE, ("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding"), ("Vary", "Accept"),
        ("Content-Encoding", "gzip"), vary_key="accept-encoding=gzip"), body=b"\x1f\x8b\x08"),
    "surrogate keys, soft purged": make(
        meta(DATE, ("Cache-Control", "max-age=60")),
        tags=frozenset({"product-1", "catalog", "caf\xe9"}), soft=True),
    "non-ASCII key": make(meta(DATE, ("Cache-Control", "max-age=1")), key="http://x/\xe9\u20ac"),
    "repeated header lines, fractional times": make(meta(
        DATE, ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Cache-Control", "public, max-age=9"),
        request_time=T0 - 1.123456789, response_time=T0 + 0.000001)),
}


@pytest.mark.parametrize("entry", list(ENTRIES.values()), ids=list(ENTRIES))
def test_round_trip(entry: Entry) -> None:
    data = encode_entry(entry)
    decoded = decode_entry(data)
    assert decoded == DecodedEntry(entry.key, entry.variant, entry.vary, entry.meta, entry.body,
                                   entry.surrogate_keys, entry.keep_until, entry.soft_purged)
    assert rebuild(decoded) == entry  # every field, derived ones (head, lifetime...) included
    assert encode_entry(rebuild(decoded)) == data  # deterministic


@pytest.mark.parametrize("entry", list(ENTRIES.values()), ids=list(ENTRIES))
def test_same_age_and_freshness_after_rebuilding(entry: Entry) -> None:
    decoded = decode_entry(encode_entry(entry))
    rebuilt = rebuild(decoded)
    assert stored_lifetime(decoded.meta, APP.policy) == stored_lifetime(entry.meta, APP.policy)
    assert rebuilt.lifetime == entry.lifetime
    assert rebuilt.initial_age == entry.initial_age
    assert rebuilt.fresh_until == entry.fresh_until
    for now in (T0, T0 + 0.5, T0 + 59.999, T0 + 3600, T0 + 86_400 * 7):
        assert current_age(decoded.meta, now) == current_age(entry.meta, now)
        assert rebuilt.age(now) == entry.age(now)


def test_layout() -> None:
    entry = ENTRIES["latin-1 header values"]
    data = encode_entry(entry)
    assert data.startswith(MAGIC)
    (n,) = struct.unpack(">I", data[4:8])
    raw = data[8:8 + n]
    doc = json.loads(raw)
    assert raw == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert set(doc) == {"key", "variant", "vary", "meta", "tags", "keep_until", "soft", "length"}
    assert doc["meta"] == entry.meta.to_json()
    assert not {"head", "lifetime", "initial_age", "fast_until", "size"} & set(doc)
    assert data[8 + n:] == entry.body


def test_encode_refuses_what_is_never_stored() -> None:
    now = T0
    marker = Entry(KEY, "", (), StoredMeta(0, (), now, now), b"", b"", 0.0, 0.0, now + 10,
                   hit_for_miss=True)
    with pytest.raises(ValueError, match="hit-for-miss"):
        encode_entry(marker)
    star = make(meta(DATE, ("Cache-Control", "max-age=5"), ("Vary", "*"), vary_key="*"))
    with pytest.raises(ValueError, match=r"Vary: \*"):
        encode_entry(star)
    nan_time = make(meta(DATE, ("Cache-Control", "max-age=5")))
    object.__setattr__(nan_time.meta, "request_time", float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        encode_entry(nan_time)
    crlf = make(meta(DATE, ("Cache-Control", "max-age=5")))
    crlf.meta = meta(DATE, ("X-A", "a\r\nSet-Cookie: x=1"))
    with pytest.raises(ValueError, match="CR, LF"):
        encode_entry(crlf)


# -- malformations --------------------------------------------------------------------------------
GOOD = ENTRIES["vary variant"]


def pack(doc: Any, body: bytes = GOOD.body, *, raw: bytes | None = None) -> bytes:
    if raw is None:
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + body


def good_doc() -> dict[str, Any]:
    data = encode_entry(GOOD)
    (n,) = struct.unpack(">I", data[4:8])
    doc: dict[str, Any] = json.loads(data[8:8 + n])
    return doc


def with_(**changes: Any) -> bytes:
    doc = good_doc()
    doc.update(changes)
    return pack(doc)


def with_meta(**changes: Any) -> bytes:
    doc = good_doc()
    doc["meta"].update(changes)
    return pack(doc)


def without(name: str) -> bytes:
    doc = good_doc()
    del doc[name]
    return pack(doc)


def with_text(old: str, new: str) -> bytes:
    """The good document with a piece of its JSON text replaced (for what json.dumps won't do)."""
    raw = json.dumps(good_doc(), sort_keys=True, separators=(",", ":"))
    assert old in raw
    return pack(None, raw=raw.replace(old, new, 1).encode())


VALID = encode_entry(GOOD)
KEEP = json.dumps(GOOD.keep_until)

MALFORMED: dict[str, tuple[Any, str]] = {
    "empty": (b"", "truncated header"),
    "magic only": (MAGIC, "truncated header"),
    "short length field": (MAGIC + b"\x00\x00", "truncated header"),
    "wrong magic": (b"HTTP/1.1 200 OK\r\n", "bad magic"),
    "short wrong magic": (b"xx", "bad magic"),
    "pickle": (b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.", "bad magic"),
    "future version": (b"GE2\n" + VALID[4:], "unsupported version"),
    "not bytes": ("GE1\n", "expected bytes"),
    "JSON length over the limit": (MAGIC + struct.pack(">I", MAX_JSON_BYTES + 1) + b"{}",
                                   "over"),
    "JSON length 2^32-1": (MAGIC + b"\xff\xff\xff\xff", "over"),
    "JSON length past the end": (VALID[:8] + VALID[8:20], "past the end"),
    "body truncated": (VALID[:-1], "body is"),
    "body extended": (VALID + b"!", "body is"),
    "JSON not UTF-8": (pack(None, raw=b'{"key":"\xff"}'), "not UTF-8"),
    "JSON syntax": (pack(None, raw=b'{"key":'), "bad JSON"),
    "JSON empty": (pack(None, raw=b""), "bad JSON"),
    "JSON nested too deeply": (pack(None, raw=b"[" * 200_000 + b"]" * 200_000), "JSON"),
    "JSON top level a list": (pack([1, 2]), "must be an object"),
    "JSON top level null": (pack(None, raw=b"null"), "must be an object"),
    "duplicate key": (with_text('"key":', '"key":"x","key":'), "duplicate key"),
    "missing key": (without("keep_until"), "missing keys"),
    "unknown key": (with_(extra=1), "unknown keys"),
    "NaN literal": (with_text(f'"keep_until":{KEEP}', '"keep_until":NaN'), "non-finite"),
    "Infinity literal": (with_text(f'"keep_until":{KEEP}', '"keep_until":-Infinity'),
                         "non-finite"),
    "overflowing float": (with_text(f'"keep_until":{KEEP}', '"keep_until":1e400'),
                          "not finite"),
    "overflowing int": (with_text(f'"keep_until":{KEEP}', '"keep_until":1' + "0" * 400),
                        "out of range"),
    "keep_until a string": (with_(keep_until="1750000000"), "must be a number"),
    "keep_until a bool": (with_(keep_until=True), "must be a number"),
    "keep_until null": (with_(keep_until=None), "must be a number"),
    "key not a string": (with_(key=5), "key"),
    "key empty": (with_(key=""), "key"),
    "variant not a string": (with_(variant=None), "variant"),
    "variant disagrees with meta": (with_(variant="accept-encoding=br"), "variant disagrees"),
    "vary not a list": (with_(vary="Accept-Encoding"), "vary must be a list"),
    "vary holds a number": (with_(vary=[1]), "vary must be a list"),
    "vary disagrees with headers": (with_(vary=["Accept"]), "vary disagrees"),
    "tags not a list": (with_(tags="a b"), "tags must be a list"),
    "tag not a string": (with_(tags=["a", None]), "tags must be a list"),
    "soft a number": (with_(soft=1), "soft"),
    "soft a string": (with_(soft="true"), "soft"),
    "length negative": (with_(length=-1), "length"),
    "length a bool": (with_(length=True), "length"),
    "length a float": (with_(length=3.0), "length"),
    "length wrong": (with_(length=len(GOOD.body) + 1), "body is"),
    "meta not an object": (with_(meta=[]), "meta must be an object"),
    "meta version": (with_meta(v=2), "not a StoredMeta"),
    "meta missing field": (with_text('"request_method":"GET",', ""), "malformed StoredMeta"),
    "meta headers not a list": (with_meta(headers={"a": "b"}), "headers must be a list"),
    "header pair of three": (with_meta(headers=[["a", "b", "c"]]), "pair"),
    "header as a string": (with_meta(headers=["ab"]), "pair"),
    "header value a number": (with_meta(headers=[["Age", 5]]), "pair"),
    "header name not a token": (with_meta(headers=[["Bad Name", "x"]]), "not a token"),
    "header name empty": (with_meta(headers=[["", "x"]]), "not a token"),
    "header value CRLF injection": (with_meta(headers=[["X-A", "a\r\nSet-Cookie: x=1"]]),
                                    "CR, LF"),
    "header value NUL": (with_meta(headers=[["X-A", "a\x00"]]), "CR, LF"),
    "header value beyond latin-1": (with_meta(headers=[["X-A", "\u20ac"]]), "non-latin-1"),
    "status a bool": (with_meta(status=True), "status"),
    "status a string": (with_meta(status="200"), "status"),
    "status 1xx": (with_meta(status=100), "status"),
    "status 600": (with_meta(status=600), "status"),
    "request_time a string": (with_meta(request_time="1750000000"), "must be a number"),
    "response_time missing": (with_text('"response_time":', '"x":'), "must be a number"),
    "response_time overflowing": (with_text('"response_time":', '"response_time":1e999,"y":'),
                                  "not finite"),
    "request_method not a string": (with_meta(request_method=1), "field types"),
    "vary_key not a string": (with_meta(vary_key=None), "field types"),
}


@pytest.mark.parametrize("data, message", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_entry(data)


def test_good_document_helpers_are_valid() -> None:
    assert decode_entry(pack(good_doc())) == decode_entry(VALID)
    assert decode_entry(bytearray(VALID)) == decode_entry(memoryview(VALID))


def test_every_truncation_is_rejected() -> None:
    for cut in range(len(VALID)):
        with pytest.raises(ValueError):
            decode_entry(VALID[:cut])


# -- properties -----------------------------------------------------------------------------------
TOKENS = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCXYZ",
                 min_size=1, max_size=12)
NAMES = st.sampled_from(["Cache-Control", "Date", "Age", "Expires", "Last-Modified", "ETag",
                         "Content-Type", "Surrogate-Control", "CDN-Cache-Control"]) | TOKENS
LATIN1 = st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n")
VALUES = st.text(alphabet=LATIN1, max_size=40) | st.sampled_from(
    ["max-age=60", "no-cache", "s-maxage=5, stale-if-error=30", "25", '"etag"',
     format_http_date(T0), format_http_date(T0 - 3600), "0"])
TIMES = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=8))
    # Vary: * is never stored (encode_entry refuses it; tested above)
    vary = draw(st.lists(st.tuples(st.just("Vary"), TOKENS.filter(lambda t: t != "*")),
                         max_size=2))
    request_time = draw(TIMES)
    stored = StoredMeta(draw(st.integers(200, 599)), tuple(headers + vary), request_time,
                        request_time + draw(st.floats(0, 30)), "GET",
                        draw(st.text(max_size=20).filter(lambda t: t != "*")) if vary else "")
    tags = draw(st.frozensets(st.text(max_size=10), max_size=4))
    return make(stored, draw(st.binary(max_size=600)), tags, draw(st.text(min_size=1)),
                draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(entries(), TIMES)
def test_property_round_trip(entry: Entry, later: float) -> None:
    data = encode_entry(entry)
    decoded = decode_entry(data)
    rebuilt = rebuild(decoded)
    assert rebuilt == entry
    assert decoded.keep_until == entry.keep_until
    now = entry.meta.response_time + later
    assert rebuilt.age(now) == entry.age(now)
    assert current_age(decoded.meta, now) == current_age(entry.meta, now)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: MAGIC + b))
def test_property_arbitrary_bytes(data: bytes) -> None:
    try:
        decoded = decode_entry(data)
    except ValueError:
        return
    assert isinstance(decoded, DecodedEntry)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_corrupted_encodings(data: st.DataObject) -> None:
    """Flipped or dropped bytes give ValueError or a fully valid entry, nothing else."""
    blob = bytearray(encode_entry(data.draw(entries())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[i] ^= data.draw(st.integers(1, 255))
        else:
            del blob[i]
    try:
        decoded = decode_entry(bytes(blob))
    except ValueError:
        return
    rebuild(decoded)  # whatever decodes can be rebuilt into an entry
