"""Packing resource records into wire format without building a dnslib message.

Rules (RFC 1035 §4.1.3, §4.1.4; RFC 3597 §4):

- Names are compressed against the question (at offset 12, so the pointers stay right for
  every query of the same length and echo its case) and against names written earlier in the
  same message: the longest already-written suffix becomes a pointer.
- Compression inside RDATA only for the RFC 1035 types whose RDATA names may be compressed
  (NS, CNAME, PTR, MX, SOA); every other type's RDATA is written as packed, uncompressed.
- A record is pre-packed once per zone into ``(owner, fixed header, RDATA parts)``, where a
  part is either literal bytes or a name (a ``Name``) to compress at packing time.
"""

from __future__ import annotations

import struct

import dnslib

_FIXED = struct.Struct("!HHI")
_PTR = struct.Struct("!H")
_U16 = struct.Struct("!H")


class Name(bytes):
    """A wire-format name inside RDATA that may be compressed."""


PackedRR = tuple[bytes, bytes, tuple[bytes, ...]]  # owner, TYPE CLASS TTL, RDATA parts


class _Uncompressed(dnslib.DNSBuffer):
    def encode_name(self, name: dnslib.DNSLabel | str) -> None:
        self.encode_name_nocompress(name)


def label_wire(label: dnslib.DNSLabel) -> bytes:
    """A DNSLabel as a lower-case wire name."""
    return b"".join(bytes([len(p)]) + p.lower() for p in label.label) + b"\x00"


def _rdata_parts(rr: dnslib.RR) -> tuple[bytes, ...]:
    rtype, rd = rr.rtype, rr.rdata
    if rtype in (2, 5, 12):  # NS, CNAME, PTR
        return (Name(label_wire(rd.label)),)
    if rtype == 15:  # MX
        return (_U16.pack(rd.preference), Name(label_wire(rd.label)))
    if rtype == 6:  # SOA
        return (Name(label_wire(rd.mname)), Name(label_wire(rd.rname)),
                struct.pack("!IIIII", *rd.times))
    buf = _Uncompressed()
    rd.pack(buf)
    return (bytes(buf.data),)


def pack_rr(rr: dnslib.RR) -> PackedRR:
    return label_wire(rr.rname), _FIXED.pack(rr.rtype, rr.rclass, rr.ttl), _rdata_parts(rr)


class MessageWriter:
    """Appends records after the question of a message (the question name at offset 12)."""

    def __init__(self, qname: bytes) -> None:
        self.offsets: dict[bytes, int] = {}
        self._remember(qname, 12)
        self.at = 12 + len(qname) + 4
        self.parts: list[bytes] = []

    def _remember(self, name: bytes, at: int) -> None:
        pos = 0
        offsets = self.offsets
        while name[pos] and at + pos < 0x4000:
            offsets.setdefault(name[pos:], at + pos)
            pos += 1 + name[pos]

    def _name(self, name: bytes) -> bytes:
        offsets = self.offsets
        pos = 0
        while name[pos]:
            offset = offsets.get(name[pos:])
            if offset is not None:
                out = name[:pos] + _PTR.pack(0xC000 | offset)
                break
            pos += 1 + name[pos]
        else:
            out = name
        for suffix_at, suffix in _suffixes(name, pos, self.at):  # labels written here
            offsets.setdefault(suffix, suffix_at)
        return out

    def add(self, packed: PackedRR) -> None:
        owner, fixed, rdata = packed
        name = self._name(owner)
        self.parts.append(name)
        self.at += len(name) + 10
        body = []
        for part in rdata:
            data = self._name(part) if isinstance(part, Name) else part
            body.append(data)
            self.at += len(data)
        self.parts += [fixed, _U16.pack(sum(map(len, body))), *body]

    def records(self, rrs: list[dnslib.RR], known: dict[int, PackedRR]) -> None:
        for rr in rrs:
            packed = known.get(id(rr))
            self.add(packed if packed is not None else pack_rr(rr))

    def body(self) -> bytes:
        return b"".join(self.parts)


def _suffixes(name: bytes, upto: int, at: int) -> list[tuple[int, bytes]]:
    """(offset, suffix) for each suffix of ``name`` that starts before ``upto``."""
    out = []
    pos = 0
    while pos < upto and at + pos < 0x4000:
        out.append((at + pos, name[pos:]))
        pos += 1 + name[pos]
    return out
