"""The binary disk format (edge/disk/fileformat.py): round trips, and every damaged shape refused.

Entries are built by a real ``EdgeApp.make_entry``. The corruption table alters one field of a
good file and *reseals* it (a correct digest over the altered bytes), so each structural check
is exercised on its own, behind the checksum that would catch a torn file first.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import pytest

from edge.disk import fileformat
from edge.disk.fileformat import HEADER_BYTES, MAGIC, PREFIX_BYTES
from edge.disk.tiered import builder_id, rebuilder
from edge.policy.freshness import StoredMeta
from edge.policy.vary import vary_key
from edge.proxy import EdgeApp
from edge.store import Entry
from edge.upstream import OriginPool
from geoconfig.cdnconfig import EdgeSettings
from geoconfig.compressconfig import CompressionSettings
from geoconfig.httpdate import format_http_date

T0 = 1_750_000_000.0
APP = EdgeApp("us-east-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: T0)
BUILDER = builder_id(APP.via, APP.policy, APP.settings.compression)
DATE = ("Date", format_http_date(T0))
FIXED = struct.Struct(">BBHIIIIII6d8s")  # the layout fileformat documents


def make(*headers: tuple[str, str], body: bytes = b"body", key: str = "http://h.test/a",
         tags: frozenset[str] = frozenset(), status: int = 200, soft: bool = False,
         variant: str = "", app: EdgeApp = APP) -> Entry:
    meta = StoredMeta(status, (DATE, *headers), T0 - 0.5, T0, "GET", variant)
    entry = app.make_entry(key, meta, body, tags)
    entry.soft_purged = soft
    return entry


ACCEPT_EN = vary_key(("accept-language",), (("accept-language", "en"),)) or ""
ENTRIES: dict[str, Entry] = {
    "plain": make(("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")),
    "empty body 204": make(("Cache-Control", "max-age=10"), status=204, body=b""),
    "binary body": make(("Cache-Control", "max-age=10"), body=bytes(range(256)) * 20),
    "surrogate keys": make(("Cache-Control", "max-age=10"), tags=frozenset({"a", "b", "z-1"})),
    "vary variant": make(("Cache-Control", "max-age=10"), ("Vary", "Accept-Language"),
                         variant=ACCEPT_EN),
    "latin-1 values": make(("Cache-Control", "max-age=10"), ("X-Name", "caf\xe9 \xff")),
    "soft-purged": make(("Cache-Control", "max-age=10"), soft=True),
    "no-cache (fast_until 0)": make(("Cache-Control", "no-cache, max-age=10")),
    "upstream Age": make(("Cache-Control", "max-age=100"), ("Age", "25")),
    "non-ASCII key and tag": make(("Cache-Control", "max-age=10"), key="http://h.test/\u00e9\udcff",
                                  tags=frozenset({"t\u00e9"})),
    "404 with a TTL": make(("Cache-Control", "max-age=5"), status=404, body=b"nope"),
}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_round_trip(name: str) -> None:
    entry = ENTRIES[name]
    data = fileformat.encode(entry, BUILDER)
    record = fileformat.decode(data)
    assert (record.key, record.variant, record.meta, record.head, record.body, record.tags,
            record.soft, record.builder) == (
        entry.key, entry.variant, entry.meta, entry.head, entry.body, entry.surrogate_keys,
        entry.soft_purged, BUILDER)
    assert (record.keep_until, record.lifetime, record.initial_age, record.fast_until) == (
        entry.keep_until, entry.lifetime, entry.initial_age, entry.fast_until)
    rebuilt = rebuilder(APP.make_entry, BUILDER)(record)  # without make_entry: same fields
    for field in ("key", "variant", "vary", "meta", "body", "head", "lifetime", "initial_age",
                  "keep_until", "surrogate_keys", "soft_purged", "fast_until", "size", "spec"):
        assert getattr(rebuilt, field) == getattr(entry, field), field
    peeked = fileformat.peek(data[:fileformat.head_bytes_needed(data[:PREFIX_BYTES])],
                             len(data))
    assert (peeked.key, peeked.variant, peeked.vary, peeked.tags, peeked.keep_until,
            peeked.soft, peeked.size) == (entry.key, entry.variant, entry.vary,
                                          entry.surrogate_keys, entry.keep_until,
                                          entry.soft_purged, len(data))


def test_another_builder_rebuilds_with_make_entry() -> None:
    """A file from an edge with another Via name (or policy) is rebuilt, not trusted as is."""
    other = EdgeApp("eu-west-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: T0)
    data = fileformat.encode(make(("Cache-Control", "max-age=60"), app=other),
                             builder_id(other.via, other.policy, other.settings.compression))
    rebuilt = rebuilder(APP.make_entry, BUILDER)(fileformat.decode(data))
    assert b"geoedge-us-east-1" in rebuilt.head and b"eu-west-1" not in rebuilt.head


def test_compressed_variants_are_made_again() -> None:
    settings = EdgeSettings(compression=CompressionSettings(enabled=True))
    app = EdgeApp("us-east-1", settings, OriginPool((), settings), lambda: T0)
    builder = builder_id(app.via, app.policy, settings.compression)
    entry = make(("Cache-Control", "max-age=60"), ("Content-Type", "text/plain"),
                 body=b"compress me " * 200, app=app)
    assert entry.encoded
    record = fileformat.decode(fileformat.encode(entry, builder))
    assert record.compressed
    rebuilt = rebuilder(app.make_entry, builder)(record)
    assert rebuilt.encoded is not None and rebuilt.encoded.keys() == entry.encoded.keys()


def test_builder_id_is_stable_and_tells_settings_apart() -> None:
    again = EdgeApp("us-east-1", EdgeSettings(), OriginPool((), EdgeSettings()), lambda: T0)
    assert builder_id(again.via, again.policy, again.settings.compression) == BUILDER
    ttl = EdgeSettings(default_ttl=123)
    other = EdgeApp("us-east-1", ttl, OriginPool((), ttl), lambda: T0)
    assert builder_id(other.via, other.policy, ttl.compression) != BUILDER


# -- damage -----------------------------------------------------------------------------------
GOOD = fileformat.encode(make(("Cache-Control", "max-age=60"), ("X-A", "1"),
                              tags=frozenset({"t"})), BUILDER)


def reseal(payload: bytes | bytearray) -> bytes:
    """A file whose digest is right for ``payload``: only the structure can refuse it."""
    return MAGIC + hashlib.blake2b(payload, digest_size=16).digest() + bytes(payload)


def altered(**fields: object) -> bytes:
    """GOOD with fixed-header fields replaced, resealed."""
    names = ("flags", "reserved", "status", "n_tags", "n_fields", "names_len", "fields_len",
             "head_len", "body_len", "request_time", "response_time", "keep_until", "lifetime",
             "initial_age", "fast_until", "builder")
    values = dict(zip(names, FIXED.unpack_from(GOOD, HEADER_BYTES), strict=True))
    values.update(fields)
    payload = FIXED.pack(*(values[n] for n in names)) + GOOD[PREFIX_BYTES:]
    return reseal(payload)


def replaced(old: bytes, new: bytes, **fields: object) -> bytes:
    """GOOD with bytes after the fixed header replaced (and header fields set), resealed."""
    body = GOOD[PREFIX_BYTES:]
    assert body.count(old) == 1
    values = list(FIXED.unpack_from(GOOD, HEADER_BYTES))
    index = {"names_len": 5, "fields_len": 6, "head_len": 7}
    for name, value in fields.items():
        values[index[name]] = value
    return reseal(FIXED.pack(*values) + body.replace(old, new))


def _field(name: str) -> int:
    return dict(zip(("names_len", "fields_len", "head_len", "body_len"),
                    FIXED.unpack_from(GOOD, HEADER_BYTES)[5:9], strict=True))[name]


DAMAGE: dict[str, tuple[str, Callable[[], bytes]]] = {  # shape: (what decode says, the file)
    "empty": ("truncated", lambda: b""),
    "magic only": ("truncated", lambda: MAGIC),
    "bad magic": ("bad magic", lambda: b"XX2\n" + GOOD[4:]),
    "old JSON format (GD1)": ("old format", lambda: b"GD1\n" + GOOD[4:]),
    "one byte short": ("checksum", lambda: GOOD[:-1]),
    "one byte extra": ("checksum", lambda: GOOD + b"\0"),
    "one byte extra, resealed": ("says otherwise", lambda: reseal(GOOD[HEADER_BYTES:] + b"\0")),
    "one byte short, resealed": ("says otherwise", lambda: reseal(GOOD[HEADER_BYTES:-1])),
    "digest flipped": ("checksum", lambda: GOOD[:5] + bytes([GOOD[5] ^ 1]) + GOOD[6:]),
    "body flipped": ("checksum", lambda: GOOD[:-1] + bytes([GOOD[-1] ^ 1])),
    "reserved byte set": ("reserved", lambda: altered(reserved=1)),
    "unknown flag": ("reserved", lambda: altered(flags=0x80)),
    "status 199": ("status 199", lambda: altered(status=199)),
    "status 600": ("status 600", lambda: altered(status=600)),
    "names length + 1": ("says otherwise", lambda: altered(names_len=_field("names_len") + 1)),
    "names and body lengths traded": ("head", lambda: altered(
        names_len=_field("names_len") + 1, body_len=_field("body_len") - 1)),
    "fields and head lengths traded": ("head", lambda: altered(
        fields_len=_field("fields_len") + 3, head_len=_field("head_len") - 3)),
    "metadata over the limit": ("says otherwise", lambda: altered(
        names_len=fileformat.MAX_META_BYTES + 1)),
    "one tag more than stored": ("counts", lambda: altered(n_tags=2)),
    "one field less than stored": ("counts", lambda: altered(n_fields=2)),
    "NaN time": ("not finite", lambda: altered(response_time=float("nan"))),
    "infinite lifetime": ("not finite", lambda: altered(lifetime=float("inf"))),
    "names not UTF-8": ("utf-8", lambda: replaced(b"\0t", b"\0\xff")),
    "header name not a token": ("token", lambda: replaced(b"X-A\x001", b"X A\x001")),
    "CR in a header value": ("CR or LF", lambda: replaced(b"X-A\x001", b"X-A\x00\r")),
    "Vary: * variant": ("Vary: \\*", lambda: replaced(b"a\0\0GET", b"a\0*\0GET",
                                                      names_len=_field("names_len") + 1)),
    "empty key": ("empty key", lambda: replaced(
        b"http://h.test/a\0", b"\0", names_len=_field("names_len") - len("http://h.test/a"))),
    "head not a status line": ("head", lambda: replaced(b"HTTP/1.1 200", b"HTTP/1.0 200")),
}


@pytest.mark.parametrize("shape", sorted(DAMAGE))
def test_damaged_files_are_refused(shape: str) -> None:
    why, make_file = DAMAGE[shape]
    with pytest.raises(ValueError, match=why):
        fileformat.decode(make_file())


def test_every_truncation_is_refused_by_peek_and_decode() -> None:
    for n in range(len(GOOD)):
        with pytest.raises(ValueError):
            fileformat.decode(GOOD[:n])
        with pytest.raises(ValueError):
            fileformat.peek(GOOD[:n], n)


def test_an_old_format_file_says_so() -> None:
    with pytest.raises(ValueError, match="old format"):
        fileformat.decode(b"GD1\n" + GOOD[4:])


@pytest.mark.parametrize(("why", "entry"), [
    ("hit-for-miss marker", Entry("http://h.test/m", "", (), StoredMeta(0, (), T0, T0), b"",
                                  b"", 0.0, 0.0, T0 + 5, hit_for_miss=True)),
    ("NUL in a tag", make(("Cache-Control", "max-age=60"), tags=frozenset({"a\0b"}))),
    ("header value outside latin-1", Entry(
        "http://h.test/u", "", (), StoredMeta(200, (("X-U", "\u20ac"),), T0, T0), b"",
        b"HTTP/1.1 200 OK\r\n", 60.0, 0.0, T0 + 60)),
])
def test_encode_refuses_what_cannot_be_stored(why: str, entry: Entry) -> None:
    with pytest.raises(ValueError):
        fileformat.encode(entry, BUILDER)


def test_with_soft_sets_the_flag_and_refuses_a_damaged_file() -> None:
    soft = fileformat.with_soft(GOOD)
    assert fileformat.decode(soft).soft and not fileformat.decode(GOOD).soft
    with pytest.raises(ValueError):
        fileformat.with_soft(GOOD[:-1] + bytes([GOOD[-1] ^ 1]))
