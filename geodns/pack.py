"""Packing resource records into wire format without building a dnslib message.

Rules (RFC 1035 §4.1.3, §4.1.4):

- An owner name equal to the question name, or to one of its ancestors, is written as a
  compression pointer into the question (which sits at offset 12, so pointers stay right for
  every query of the same length); any other owner name is written in full.
- RDATA is packed once per zone record with no compression at all (compression inside RDATA
  is optional, and pointers packed in isolation would point into the wrong message).
- A record's packed form is ``(owner wire name, TYPE CLASS TTL RDLENGTH RDATA)``.
"""

from __future__ import annotations

import struct

import dnslib

_FIXED = struct.Struct("!HHIH")
_PTR = struct.Struct("!H")


class _Uncompressed(dnslib.DNSBuffer):
    def encode_name(self, name: dnslib.DNSLabel | str) -> None:
        self.encode_name_nocompress(name)


def owner_wire(label: dnslib.DNSLabel) -> bytes:
    """A DNSLabel as a lower-case wire name."""
    return b"".join(bytes([len(p)]) + p.lower() for p in label.label) + b"\x00"


def pack_rr(rr: dnslib.RR) -> tuple[bytes, bytes]:
    """(owner, fixed fields + RDATA) for one record."""
    buf = _Uncompressed()
    rr.rdata.pack(buf)
    rdata = bytes(buf.data)
    return owner_wire(rr.rname), _FIXED.pack(rr.rtype, rr.rclass, rr.ttl, len(rdata)) + rdata


def suffix_offsets(qname: bytes) -> dict[bytes, int]:
    """Each name that ends ``qname`` (itself and its ancestors) -> its offset in a message
    whose question starts at offset 12."""
    out: dict[bytes, int] = {}
    pos = 0
    while qname[pos]:
        out[qname[pos:]] = 12 + pos
        pos += 1 + qname[pos]
    return out


def pack_records(rrs: list[dnslib.RR], offsets: dict[bytes, int],
                 known: dict[int, tuple[bytes, bytes]]) -> bytes:
    """Records in wire format; ``known`` holds pre-packed zone records by ``id(rr)``."""
    parts: list[bytes] = []
    for rr in rrs:
        packed = known.get(id(rr))
        owner, rest = packed if packed is not None else pack_rr(rr)
        offset = offsets.get(owner)
        parts.append(_PTR.pack(0xC000 | offset) if offset is not None else owner)
        parts.append(rest)
    return b"".join(parts)
