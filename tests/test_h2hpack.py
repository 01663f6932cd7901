"""edge.h2hpack: what it encodes decodes (with hpack's decoder) to exactly the fields given."""

from __future__ import annotations

import pytest
from hpack import Decoder

from edge.h2hpack import StatelessEncoder, encode_field

BLOCKS = [
    [(b":status", b"200"), (b"content-type", b"text/html"), (b"content-length", b"1024")],
    [(b":status", b"304"), (b"etag", b'"v1-br"'), (b"vary", b"Accept-Encoding")],
    [(b"x-custom-name", b"some value"), (b"set-cookie", b"a=b; Secure"), (b"age", b"0")],
    [(b":status", b"404"), (b"cache-status", b"geoedge-us-east-1; hit; ttl=59"),
     (b"via", b"1.1 geoedge-us-east-1"), (b"x-empty", b"")],
]


def test_round_trip_and_no_dynamic_table():
    enc, dec = StatelessEncoder(), Decoder()
    for _ in range(2):  # the second time from the cache
        for block in BLOCKS:
            assert dec.decode(enc.encode(block), raw=True) == block
    assert len(dec.header_table.dynamic_entries) == 0  # nothing was ever inserted


@pytest.mark.parametrize(("field", "first"), [
    ((b":status", b"200"), 0x88),  # static index 8, indexed
    ((b"content-type", b"x"), 0x0F),  # static name 31 (>= 15: prefix full), no indexing
    ((b"set-cookie", b"x"), 0x1F),  # never indexed
    ((b"x-new", b"x"), 0x00),  # new name, without indexing
])
def test_representations(field, first):
    assert encode_field(*field)[0] == first


def test_table_size_update_is_announced_once():
    enc, dec = StatelessEncoder(), Decoder()
    enc.header_table_size = 0
    block = enc.encode(BLOCKS[0])
    assert block[0] == 0x20  # a dynamic table size update to 0
    dec.max_allowed_table_size = 0
    assert dec.decode(block, raw=True) == BLOCKS[0]
    assert enc.encode(BLOCKS[0])[0] != 0x20
