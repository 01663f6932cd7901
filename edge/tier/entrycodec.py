"""Wire format of a stored response in the shared (regional, Redis) cache tier: bytes, never pickle.

Rules:

- Layout: ``MAGIC`` (b"GE1\\n": format name and version) | 4-byte big-endian length ``n`` of the
  JSON document | the JSON document (``n`` bytes, UTF-8, sorted keys, compact, ASCII-escaped so
  every str round-trips) | the body bytes, exactly ``length`` of them.
- The JSON document has exactly these keys: ``key`` (primary key), ``variant`` (Vary key),
  ``vary`` (the response's Vary field values), ``meta`` (``StoredMeta.to_json()``), ``tags``
  (surrogate keys, sorted), ``keep_until`` (epoch seconds), ``soft`` (soft-purged),
  ``length`` (body length, so a truncated body is detected).
- Derived fields (``head``, ``lifetime``, ``initial_age``, ``fast_until``, ``size``) are not
  stored: the reader rebuilds the entry with the proxy's ``make_entry(key, meta, body, tags)``
  from the same ``meta`` (then sets ``soft_purged``), so Age and freshness are exactly those
  of the entry in memory.
  ``variant`` and ``vary`` are stored for the reader's convenience but must agree with what
  ``make_entry`` derives (``meta.vary_key`` and the meta's Vary lines).
- Only real stored responses are encoded: a hit-for-miss marker or a ``Vary: *`` response
  (never stored, store.py / proxy.py) raises ValueError.
- Decoding trusts nothing: any malformation -- wrong magic or version, short input, JSON length
  over ``MAX_JSON_BYTES`` or past the end, body length mismatch, invalid UTF-8 or JSON,
  duplicate or missing or unknown keys, wrong types (bool is not a number), non-finite numbers
  (NaN/Infinity literals, overflowing values), a status outside 200-599, a header name that is
  not a token (RFC 9110 §5.1), a header value holding CR, LF or NUL or a character outside
  latin-1 (the head is serialised as latin-1), fields that disagree -- raises ValueError with
  a message saying what is wrong. The caller treats that as a miss. Encoding runs the same
  checks, so whatever ``encode_entry`` returns, ``decode_entry`` accepts.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from edge.policy.freshness import StoredMeta
from edge.policy.headers import get_all
from edge.store import Entry

__all__ = ["MAGIC", "MAX_JSON_BYTES", "DecodedEntry", "decode_entry", "encode_entry"]

MAGIC = b"GE1\n"
MAX_JSON_BYTES = 8 * 1024 * 1024  # headers may reach 1 MiB (max_header_bytes), escaped up to 6x
_LENGTH = struct.Struct(">I")
_PREFIX = len(MAGIC) + _LENGTH.size
_KEYS = frozenset({"key", "variant", "vary", "meta", "tags", "keep_until", "soft", "length"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]|[^\x00-\xff]")


@dataclass(frozen=True)
class DecodedEntry:
    key: str
    variant: str
    vary: tuple[str, ...]
    meta: StoredMeta
    body: bytes
    surrogate_keys: frozenset[str]
    keep_until: float
    soft_purged: bool


def encode_entry(entry: Entry) -> bytes:
    """The shared-tier bytes for a stored entry; ValueError if it cannot be stored there."""
    if entry.hit_for_miss:
        raise ValueError("a hit-for-miss marker is not stored in the shared tier")
    doc = {
        "key": entry.key,
        "variant": entry.variant,
        "vary": list(entry.vary),
        "meta": entry.meta.to_json(),
        "tags": sorted(entry.surrogate_keys),
        "keep_until": entry.keep_until,
        "soft": entry.soft_purged,
        "length": len(entry.body),
    }
    _check_document(doc, entry.body)
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"entry metadata is {len(raw)} bytes, over {MAX_JSON_BYTES}")
    return b"".join((MAGIC, _LENGTH.pack(len(raw)), raw, entry.body))


def decode_entry(data: bytes) -> DecodedEntry:
    """Inverse of ``encode_entry``; ValueError on anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"shared entry: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PREFIX:
        if MAGIC.startswith(data[:len(MAGIC)]):
            raise ValueError(f"shared entry: truncated header ({len(data)} bytes)")
        raise ValueError("shared entry: bad magic")
    if data[:len(MAGIC)] != MAGIC:
        if data[:2] == MAGIC[:2]:
            raise ValueError(f"shared entry: unsupported version {data[:len(MAGIC)]!r}")
        raise ValueError("shared entry: bad magic")
    (n,) = _LENGTH.unpack_from(data, len(MAGIC))
    if n > MAX_JSON_BYTES:
        raise ValueError(f"shared entry: JSON length {n} over {MAX_JSON_BYTES}")
    if len(data) < _PREFIX + n:
        raise ValueError(f"shared entry: JSON length {n} past the end ({len(data)} bytes)")
    try:
        text = data[_PREFIX:_PREFIX + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"shared entry: JSON is not UTF-8: {exc}") from exc
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("shared entry: JSON nested too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError and the hooks' errors
        raise ValueError(f"shared entry: bad JSON: {exc}") from exc
    body = data[_PREFIX + n:]
    return _check_document(doc, body)


# -- validation -----------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate key {name!r}")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite(value: Any, what: str) -> float:
    if type(value) not in (int, float):
        raise ValueError(f"shared entry: {what} must be a number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError as exc:
        raise ValueError(f"shared entry: {what} out of range") from exc
    if not math.isfinite(result):
        raise ValueError(f"shared entry: {what} is not finite")
    return result


def _str_list(value: Any, what: str) -> list[str]:
    if type(value) is not list or not all(type(item) is str for item in value):
        raise ValueError(f"shared entry: {what} must be a list of strings")
    return value


def _check_meta(raw: Any) -> StoredMeta:
    if type(raw) is not dict:
        raise ValueError("shared entry: meta must be an object")
    headers = raw.get("headers")
    if type(headers) is not list:
        raise ValueError("shared entry: meta.headers must be a list")
    for pair in headers:
        if type(pair) is not list or len(pair) != 2 or not all(type(s) is str for s in pair):
            raise ValueError("shared entry: each header must be a [name, value] pair of strings")
        if not _TOKEN.fullmatch(pair[0]):
            raise ValueError(f"shared entry: header name {pair[0]!r} is not a token")
        if _BAD_VALUE.search(pair[1]):
            raise ValueError(f"shared entry: header {pair[0]!r} has CR, LF, NUL or non-latin-1")
    status = raw.get("status")
    if type(status) is not int or not 200 <= status <= 599:
        raise ValueError(f"shared entry: status {status!r} is not a stored status (200-599)")
    for name in ("request_time", "response_time"):
        _finite(raw.get(name), f"meta.{name}")
    try:
        return StoredMeta.from_json(raw)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"shared entry: {exc}") from exc


def _check_document(doc: Any, body: bytes) -> DecodedEntry:
    if type(doc) is not dict:
        raise ValueError("shared entry: JSON document must be an object")
    if doc.keys() != _KEYS:
        missing, unknown = sorted(_KEYS - doc.keys()), sorted(doc.keys() - _KEYS)
        raise ValueError(f"shared entry: missing keys {missing}, unknown keys {unknown}")
    key, variant, soft, length = doc["key"], doc["variant"], doc["soft"], doc["length"]
    if type(key) is not str or not key:
        raise ValueError("shared entry: key must be a non-empty string")
    if type(variant) is not str:
        raise ValueError("shared entry: variant must be a string")
    if type(soft) is not bool:
        raise ValueError("shared entry: soft must be true or false")
    if type(length) is not int or length < 0:
        raise ValueError("shared entry: length must be an int >= 0")
    if length != len(body):
        raise ValueError(f"shared entry: body is {len(body)} bytes, {length} expected")
    vary = tuple(_str_list(doc["vary"], "vary"))
    tags = frozenset(_str_list(doc["tags"], "tags"))
    keep_until = _finite(doc["keep_until"], "keep_until")
    meta = _check_meta(doc["meta"])
    if variant != meta.vary_key:
        raise ValueError("shared entry: variant disagrees with meta.vary_key")
    if variant == "*":
        raise ValueError("shared entry: a Vary: * response is never stored")
    if vary != get_all(meta.headers, "vary"):
        raise ValueError("shared entry: vary disagrees with the stored Vary lines")
    return DecodedEntry(key, variant, vary, meta, body, tags, keep_until, soft)
