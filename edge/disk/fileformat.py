"""The layout of one cached object on disk: binary, checksummed, never pickle.

Rules:

- A file is ``MAGIC`` (b"GD2\\n": format name and version) | a 16-byte BLAKE2b digest of
  everything after it | a fixed header (``_FIXED``: flags, status, counts, the lengths of the
  four sections, six doubles, the builder's fingerprint) | the names section | the fields
  section | the pre-serialised head | the body. Nothing is JSON: decoding is one ``struct``
  unpack, two ``split`` calls and slices.
- Fixed header: ``flags`` (bit 0 soft-purged, bit 1 the entry had compressed variants, which
  the reader makes again), a reserved zero byte, ``status``, the number of surrogate keys and
  of stored header fields, the byte lengths of the names, fields, head and body sections,
  then ``request_time``, ``response_time``, ``keep_until``, ``lifetime``, ``initial_age``,
  ``fast_until`` (big-endian doubles) and ``builder`` (8 bytes, see below).
- Names section: UTF-8 (``surrogatepass``: every str round-trips) of the primary key, the
  variant key, the request method and the sorted surrogate keys, joined by NUL. Fields
  section: latin-1 (as the head is serialised) of each stored header field's name and value,
  joined by NUL. None of these may hold a NUL (``encode`` refuses the entry: it stays in
  memory only).
- ``builder`` is a fingerprint of what the entry's derived fields (head, lifetime, age,
  freshness) were computed with (``tiered.builder_id``: the Via name, the caching policy,
  the compression settings). A reader whose fingerprint matches uses the stored head and
  figures as they are; another one rebuilds the entry from the stored response with its own
  builder (the proxy's ``make_entry``), as a fill would.
- ``decode`` trusts nothing: wrong magic (a ``GD1`` file of the JSON format before this one
  is reported as an old format, and deleted like any other unreadable file), short input,
  digest mismatch, lengths that disagree with the file's, reserved bits set, a status
  outside 200-599, non-finite numbers, undecodable strings, a header name that is not a token
  or a value with CR, LF or NUL, an empty key, a ``Vary: *`` variant, a head that is not an
  HTTP/1.1 status line -- each raises ValueError saying what is wrong; the caller deletes the
  file and the request is a miss. Whatever ``encode`` returns, ``decode`` accepts.
- ``peek`` reads only the header and metadata (what the loader needs to index a file without
  reading its head and body) and checks that the file is exactly as long as they say; the
  digest is checked when the object is served, which reads the whole file anyway.
- File names come from hashes of the primary key and of the variant key, so a request finds
  its files without an index: ``<root>/<k[:2]>/<k>-<v>.obj`` (``k``, ``v``: hex SHA-256,
  truncated to 32 digits): 256 bucket directories, made once, and no directory per key (a
  directory per object cost a ``mkdir`` on every fill). Writers build a file under
  ``<root>/tmp`` and rename it into place, so a crash leaves either the old file, the new
  one or a stray temporary file (removed at start), never a half-written object under a real
  name.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from edge.policy.freshness import StoredMeta
from edge.policy.headers import get_all
from edge.store import Entry

__all__ = ["HEADER_BYTES", "MAGIC", "PREFIX_BYTES", "Peeked", "Record", "bucket", "decode",
           "encode", "head_bytes_needed", "key_hash", "object_path", "peek", "with_soft"]

MAGIC = b"GD2\n"
OLD_MAGICS = (b"GD1\n",)  # earlier formats: read as a miss, the file deleted
_DIGEST = 16
HEADER_BYTES = len(MAGIC) + _DIGEST
# flags, reserved, status, tags, fields, names/fields/head/body lengths, six doubles, builder
_FIXED = struct.Struct(">BBHIIIIII6d8s")
PREFIX_BYTES = HEADER_BYTES + _FIXED.size  # what ``head_bytes_needed`` must see
SOFT, COMPRESSED = 0x01, 0x02
MAX_META_BYTES = 16 * 1024 * 1024  # headers may reach 1 MiB (max_header_bytes); keys, tags
SUFFIX = ".obj"
NO_TAGS: frozenset[str] = frozenset()  # shared: every frozenset is tracked by the collector
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def key_hash(key: str) -> str:
    """What every file name of one primary key starts with (then ``-``)."""
    return _hex(key)


def bucket(root: Path, k: str) -> Path:
    """The directory holding the files of the primary key whose ``key_hash`` is ``k``."""
    return root / k[:2]


def object_path(root: Path, key: str, variant: str) -> Path:
    k = _hex(key)
    return root / k[:2] / f"{k}-{_hex(variant)}{SUFFIX}"


def _digest(payload: bytes | memoryview) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST).digest()


@dataclass(frozen=True, slots=True)
class Record:
    """What one file holds: a stored response and the entry's derived fields."""

    key: str
    variant: str
    meta: StoredMeta
    head: bytes
    body: bytes
    tags: frozenset[str]
    keep_until: float
    lifetime: float
    initial_age: float
    fast_until: float
    soft: bool
    compressed: bool  # the entry had compressed variants (made again when read)
    builder: bytes

    @property
    def vary(self) -> tuple[str, ...]:
        return get_all(self.meta.headers, "vary")


def encode(entry: Entry, builder: bytes) -> bytes:
    """The file bytes for a stored entry; ValueError if it cannot be stored on disk (a marker,
    a ``Vary: *`` answer, a NUL in a string, a header field outside latin-1, a builder id not
    8 bytes)."""
    if entry.hit_for_miss or entry.variant == "*":
        raise ValueError("disk object: markers and Vary: * answers are never stored")
    if len(builder) != 8:
        raise ValueError("disk object: the builder id must be 8 bytes")
    meta = entry.meta
    texts = [entry.key, entry.variant, meta.request_method, *sorted(entry.surrogate_keys)]
    flat = [s for field in meta.headers for s in field]
    if any("\0" in t for t in texts) or any("\0" in f for f in flat):
        raise ValueError("disk object: a key, tag or header field holds a NUL")
    try:
        names = "\0".join(texts).encode("utf-8", "surrogatepass")
        fields = "\0".join(flat).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"disk object: {exc}") from exc
    flags = (SOFT if entry.soft_purged else 0) | (COMPRESSED if entry.encoded else 0)
    fixed = _FIXED.pack(flags, 0, meta.status, len(entry.surrogate_keys), len(meta.headers),
                        len(names), len(fields), len(entry.head), len(entry.body),
                        meta.request_time, meta.response_time, entry.keep_until,
                        entry.lifetime, entry.initial_age, entry.fast_until, builder)
    payload = b"".join((fixed, names, fields, entry.head, entry.body))
    data = b"".join((MAGIC, _digest(payload), payload))
    _parse(data, len(data), whole=True)  # what is written must read back
    return data


def decode(data: bytes) -> Record:
    """The record a file holds; ValueError if it is not exactly what ``encode`` wrote."""
    _check_magic(data)
    if _digest(memoryview(data)[HEADER_BYTES:]) != data[len(MAGIC):HEADER_BYTES]:
        raise ValueError("disk object: checksum mismatch (torn or altered file)")
    record = _parse(data, len(data), whole=True)
    assert isinstance(record, Record)
    return record


def with_soft(data: bytes) -> bytes:
    """The same file with its soft-purged flag set (checked first: a damaged file is not
    resealed as a good one)."""
    decode(data)
    payload = bytearray(data[HEADER_BYTES:])
    payload[0] |= SOFT
    return b"".join((MAGIC, _digest(payload), payload))


@dataclass(frozen=True, slots=True)
class Peeked:
    """What the loader indexes: the header of a file, its head and body not read."""

    key: str
    variant: str
    vary: tuple[str, ...]
    tags: frozenset[str]
    keep_until: float
    soft: bool
    size: int  # bytes of the whole file


def peek(head: bytes, file_size: int) -> Peeked:
    """Index data from the first bytes of a file (``head_bytes_needed`` of them); ValueError
    when malformed or when the file is shorter or longer than its header says."""
    _check_magic(head)
    found = _parse(head, file_size, whole=False)
    assert isinstance(found, Peeked)
    return found


def head_bytes_needed(head: bytes) -> int:
    """How many leading bytes ``peek`` needs, from the first PREFIX_BYTES of a file."""
    if len(head) < PREFIX_BYTES:
        return PREFIX_BYTES
    names_len, fields_len = _FIXED.unpack_from(head, HEADER_BYTES)[5:7]
    return PREFIX_BYTES + min(names_len + fields_len, MAX_META_BYTES)


# -- parsing ----------------------------------------------------------------------------------
def _check_magic(data: bytes) -> None:
    if len(data) < PREFIX_BYTES:
        raise ValueError(f"disk object: truncated ({len(data)} bytes)")
    magic = data[:len(MAGIC)]
    if magic != MAGIC:
        if magic in OLD_MAGICS:
            raise ValueError(f"disk object: old format {magic!r}")
        raise ValueError("disk object: bad magic")


def _parse(data: bytes, file_size: int, whole: bool) -> Record | Peeked:
    """The record (``whole``: ``data`` is the whole file) or what the loader needs."""
    (flags, reserved, status, n_tags, n_fields, names_len, fields_len, head_len, body_len,
     request_time, response_time, keep_until, lifetime, initial_age, fast_until,
     builder) = _FIXED.unpack_from(data, HEADER_BYTES)
    if reserved or flags & ~(SOFT | COMPRESSED):
        raise ValueError("disk object: reserved bits set")
    if not 200 <= status <= 599:
        raise ValueError(f"disk object: status {status} is not a stored status")
    start = PREFIX_BYTES + names_len
    end = start + fields_len
    if end + head_len + body_len != file_size:
        raise ValueError(f"disk object: {file_size} bytes, the header says otherwise "
                         "(truncated?)")
    if names_len + fields_len > MAX_META_BYTES or len(data) < end:
        raise ValueError("disk object: metadata lengths out of range")
    if not all(map(math.isfinite, (request_time, response_time, keep_until, lifetime,
                                   initial_age, fast_until))):
        raise ValueError("disk object: a time or lifetime is not finite")
    raw_fields = data[start:end]
    if b"\r" in raw_fields or b"\n" in raw_fields:
        raise ValueError("disk object: a header field holds CR or LF")
    try:
        texts = data[PREFIX_BYTES:start].decode("utf-8", "surrogatepass").split("\0")
    except UnicodeDecodeError as exc:
        raise ValueError(f"disk object: {exc}") from exc
    flat = raw_fields.decode("latin-1").split("\0") if n_fields else []
    if len(texts) != 3 + n_tags or len(flat) != 2 * n_fields or (not n_fields and fields_len):
        raise ValueError("disk object: string counts disagree with the header")
    key, variant, method = texts[:3]
    tags = frozenset(texts[3:]) if n_tags else NO_TAGS
    names = flat[::2]
    if not all(map(_TOKEN.fullmatch, names)):
        raise ValueError("disk object: a header name is not a token")
    if not key or variant == "*" or len(tags) != n_tags or not method.isascii():
        raise ValueError("disk object: empty key, Vary: * variant, repeated tags or method")
    headers = tuple(zip(names, flat[1::2], strict=True))
    soft = bool(flags & SOFT)
    if not whole:
        return Peeked(key, variant, get_all(headers, "vary"), tags, keep_until, soft, file_size)
    head = data[end:end + head_len]
    if not head.startswith(b"HTTP/1.1 ") or not head.endswith(b"\r\n"):
        raise ValueError("disk object: the head is not an HTTP/1.1 response head")
    meta = StoredMeta(status, headers, request_time, response_time, method, variant)
    return Record(key, variant, meta, head, data[end + head_len:], tags, keep_until, lifetime,
                  initial_age, fast_until, soft, bool(flags & COMPRESSED), builder)
