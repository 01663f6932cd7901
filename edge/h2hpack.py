"""A stateless HPACK encoder for the edge's HTTP/2 responses, with per-field caching.

hpack's Encoder (pure Python) inserts fields into the dynamic table and Huffman-codes every
string of every response: on cache hits that was most of a request's CPU. This encoder never
uses the dynamic table (RFC 7541 §6.1 indexed static entries, §6.2.2 literals without
indexing, §6.2.3 never-indexed for Set-Cookie), so a field always encodes to the same bytes
and each distinct (name, value) is encoded once and then looked up (``CACHE`` fields; the
cache is emptied when full). The peer's decoder never has to keep state for our responses;
a new SETTINGS_HEADER_TABLE_SIZE is acknowledged with a dynamic table size update at the
start of the next block (§4.2, §6.3), though nothing is ever inserted.

It is a drop-in for ``h2``'s ``conn.encoder`` (``encode`` and ``header_table_size``); the
decoder for requests stays h2's own (clients do use the dynamic table).
"""

from __future__ import annotations

from collections.abc import Iterable

from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

__all__ = ["StatelessEncoder"]

CACHE = 4096
NEVER_CACHED = frozenset({b"set-cookie", b"authorization"})
_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_FULL: dict[tuple[bytes, bytes], int] = {}
_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FULL.setdefault((_n, _v), _i)
    _NAME.setdefault(_n, _i)


def _int(value: int, prefix_bits: int, flags: int) -> bytes:
    out = encode_integer(value, prefix_bits)
    out[0] |= flags
    return bytes(out)


def _string(data: bytes) -> bytes:
    packed = _HUFFMAN.encode(data)
    if len(packed) < len(data):
        return _int(len(packed), 7, 0x80) + packed
    return _int(len(data), 7, 0) + data


def encode_field(name: bytes, value: bytes) -> bytes:
    index = _FULL.get((name, value))
    if index is not None:
        return _int(index, 7, 0x80)
    flags = 0x10 if name in NEVER_CACHED else 0x00  # never indexed / without indexing
    name_index = _NAME.get(name)
    if name_index is not None:
        return _int(name_index, 4, flags) + _string(value)
    return bytes([flags]) + _string(name) + _string(value)


class StatelessEncoder:
    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes], bytes] = {}
        self._table_size = 4096
        self._pending: int | None = None

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._table_size:
            self._table_size = value
            self._pending = value

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        cache = self._cache
        parts: list[bytes] = []
        if self._pending is not None:
            parts.append(_int(self._pending, 5, 0x20))
            self._pending = None
        for field in headers:
            name, value = field[0], field[1]
            key = (name, value)
            data = cache.get(key)
            if data is None:
                data = encode_field(name, value)
                if name not in NEVER_CACHED:
                    if len(cache) >= CACHE:
                        cache.clear()
                    cache[key] = data
            parts.append(data)
        return b"".join(parts)
