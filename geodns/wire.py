"""Parsing DNS queries off the wire, fast, without building dnslib objects.

Rules (RFC 1035 §4.1, RFC 6891 §6, RFC 7871 §6):

- Fewer than 12 bytes, or QR=1 (a response): the packet is dropped (``Drop``); answering
  responses invites loops and reflection.
- Exactly one question is required; QDCOUNT 0 or >1 is FORMERR.
- The question name may use compression only through :func:`_read_name`'s pointer rules:
  pointers must point backwards but not into the header, at most 127 jumps (no loops),
  labels ≤ 63, names ≤ 255.
- Answer and authority records in a query are skipped, not trusted.
- At most one OPT record, with owner name root; a second one is FORMERR. The OPT's class is the
  requestor's UDP payload size (values below 512 are treated as 512).
- EDNS Client Subnet (option 8): FAMILY must be 1 or 2, SOURCE PREFIX-LENGTH at most 32/128,
  ADDRESS exactly ceil(source/8) octets with no bits set past the prefix; otherwise FORMERR.
  Two ECS options are FORMERR. SCOPE PREFIX-LENGTH in a query must be 0, else FORMERR
  (RFC 7871 §7.1.2).
- Bytes left over after the last record are FORMERR.

``parse_query`` returns a :class:`Query` or raises :class:`FormErr` (with whatever could be
parsed, so the error answer can echo the ID, the question and the OPT) or :class:`Drop`.
:func:`query_fields` flattens a Query into the tuple that the C extension's ``scan_common``
(geodns/_fastudp.c) returns for the usual query, so the engine takes both the same way; the
tests check that ``scan_common(data) == query_fields(parse_common(data))``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

_HEADER = struct.Struct("!HHHHHH")
_U16 = struct.Struct("!H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

TYPE_OPT = 41
OPTION_ECS = 8


class Drop(Exception):
    """The packet does not deserve an answer."""


@dataclass(slots=True)
class Edns:
    udp_size: int
    version: int
    do: bool
    ecs: Ecs | None
    options: tuple[tuple[int, bytes], ...] = ()  # every other option (code, data), in order


@dataclass(frozen=True, slots=True)
class Ecs:
    family: int  # 1 = IPv4, 2 = IPv6
    source: int  # SOURCE PREFIX-LENGTH
    address: bytes  # exactly ceil(source / 8) octets, as received

    def padded(self) -> bytes:
        """The address padded with zeros to its family's full length."""
        full = 4 if self.family == 1 else 16
        return self.address + bytes(full - len(self.address))


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    question: bytes  # the question section exactly as received (name in the client's case)
    qname: bytes  # the name in wire format, lower-cased, uncompressed
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


class FormErr(Exception):
    """A malformed query; carries what was parsed so the FORMERR answer can echo it."""

    def __init__(self, reason: str, id_: int, flags: int, question: bytes | None = None,
                 edns: Edns | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.id = id_
        self.flags = flags
        self.question = question
        self.edns = edns


def _read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read a possibly compressed name at ``pos``; return (lower-cased wire name, end pos)."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    total = 1
    n = len(data)
    while True:
        if pos >= n:
            raise ValueError("name runs past the end of the packet")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= n:
                raise ValueError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= pos or jumps > 127:
                raise ValueError("compression pointer loop or forward pointer")
            if target < 12:
                raise ValueError("compression pointer into the header")
            jumps += 1
            pos = target
            continue
        if kind:
            raise ValueError("unsupported label type")
        label = data[pos + 1 : pos + 1 + length]
        if len(label) != length:
            raise ValueError("label runs past the end of the packet")
        total += length + 1
        if total > 255:
            raise ValueError("name longer than 255 octets")
        labels.append(bytes([length]) + label.lower())
        pos += 1 + length
    return b"".join(labels) + b"\x00", (end if end >= 0 else pos)


def _parse_options(data: bytes, pos: int, rdlen: int,
                   others: list[tuple[int, bytes]]) -> Ecs | None:
    """The ECS option, if any; every other option is appended to ``others``."""
    ecs: Ecs | None = None
    end = pos + rdlen
    while pos < end:
        if pos + 4 > end:
            raise ValueError("truncated EDNS option")
        code, length = struct.unpack_from("!HH", data, pos)
        pos += 4
        if pos + length > end:
            raise ValueError("EDNS option runs past the OPT record")
        if code == OPTION_ECS:
            if ecs is not None:
                raise ValueError("more than one ECS option")
            ecs = _parse_ecs(data[pos : pos + length])
        else:
            others.append((code, bytes(data[pos : pos + length])))
        pos += length
    return ecs


def _parse_ecs(opt: bytes) -> Ecs:
    if len(opt) < 4:
        raise ValueError("ECS option shorter than 4 octets")
    family, source = _U16.unpack_from(opt)[0], opt[2]
    if family not in (1, 2):
        raise ValueError(f"ECS family {family} is not IPv4 or IPv6")
    if source > (32 if family == 1 else 128):
        raise ValueError(f"ECS source prefix {source} is longer than the address")
    if opt[3]:
        raise ValueError(f"ECS scope prefix {opt[3]} in a query (must be 0)")
    address = opt[4:]
    if len(address) != (source + 7) // 8:
        raise ValueError("ECS address length does not match its source prefix")
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise ValueError("ECS address has bits set past its source prefix")
    return Ecs(family, source, bytes(address))


def _scan_plain_name(data: bytes, pos: int) -> int:
    """End of an uncompressed name starting at ``pos``, or -1 (compressed, odd or truncated:
    the careful ``_read_name`` then decides)."""
    n = len(data)
    start = pos
    while pos < n:
        length = data[pos]
        if length == 0:
            return pos + 1 if pos + 1 - start <= 255 else -1
        if length > 63:
            return -1
        pos += length + 1
    return -1


_QTYPE_QCLASS = struct.Struct("!HH")
_OPT_HEAD = struct.Struct("!BHHIH")  # root owner, TYPE, CLASS (payload), TTL, RDLENGTH


def parse_common(data: bytes) -> Query | None:
    """The usual query (one plain question, at most an OPT with at most one ECS option) parsed
    in one pass; None for anything else, which ``parse_query`` then handles in full."""
    n = len(data)
    if n < 17:
        return None
    id_, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & 0x8000 or qd != 1 or an or ns or ar > 1:
        return None
    end = _scan_plain_name(data, 12)
    if end < 0 or end + 4 > n:
        return None
    qtype, qclass = _QTYPE_QCLASS.unpack_from(data, end)
    pos = end + 4
    if not ar:
        if pos != n:
            return None
        return Query(id_, flags, data[12:pos], data[12:end].lower(), qtype, qclass, None)
    if pos + 11 > n:
        return None
    root, rtype, rclass, ttl, rdlen = _OPT_HEAD.unpack_from(data, pos)
    if root or rtype != TYPE_OPT or pos + 11 + rdlen != n:
        return None
    ecs = None
    if rdlen:
        if rdlen < 4:
            return None
        code, length = _QTYPE_QCLASS.unpack_from(data, pos + 11)
        if code != OPTION_ECS or length + 4 != rdlen:
            return None
        try:
            ecs = _parse_ecs(data[pos + 15 : n])
        except ValueError:
            return None  # parse_query answers FORMERR with the reason
    edns = Edns(rclass if rclass > 512 else 512, (ttl >> 16) & 0xFF, bool(ttl & 0x8000), ecs)
    return Query(id_, flags, data[12:pos], data[12:end].lower(), qtype, qclass, edns)


Fields = tuple[int, int, bytes, bytes, int, int, int, int, bool, int, int, bytes]


def query_fields(q: Query) -> Fields:
    """(id, flags, question, qname, qtype, qclass, udp_size, version, do, ecs family, ecs
    source, ecs address); udp_size -1 without EDNS, family 0 (source 0, address b"") without
    ECS. The same tuple as ``_fastudp.scan_common``."""
    edns = q.edns
    if edns is None:
        return q.id, q.flags, q.question, q.qname, q.qtype, q.qclass, -1, 0, False, 0, 0, b""
    ecs = edns.ecs
    if ecs is None:
        return (q.id, q.flags, q.question, q.qname, q.qtype, q.qclass, edns.udp_size,
                edns.version, edns.do, 0, 0, b"")
    return (q.id, q.flags, q.question, q.qname, q.qtype, q.qclass, edns.udp_size, edns.version,
            edns.do, ecs.family, ecs.source, ecs.address)


def c_scan_common() -> Callable[[bytes], Fields | None] | None:
    """The C extension's ``scan_common`` (``query_fields`` of the usual query, None for any
    other packet), or None when the extension is not built."""
    try:
        from geodns._fastudp import scan_common
    except ImportError:
        return None
    return scan_common


def parse_query(data: bytes) -> Query:
    common = parse_common(data)
    if common is not None:
        return common
    if len(data) < 12:
        raise Drop("shorter than a DNS header")
    id_, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise Drop("QR=1: a response, not a query")
    if qd != 1:
        raise FormErr(f"QDCOUNT is {qd}, expected 1", id_, flags)
    end = _scan_plain_name(data, 12)
    try:
        if end > 0:
            qname, pos = data[12:end].lower(), end
        else:
            qname, pos = _read_name(data, 12)
        if pos + 4 > len(data):
            raise ValueError("question runs past the end of the packet")
        qtype, qclass = struct.unpack_from("!HH", data, pos)
    except ValueError as exc:
        raise FormErr(str(exc), id_, flags) from None
    pos += 4
    question = data[12:pos]  # never compressed: a pointer could only go into the header
    edns: Edns | None = None
    try:
        for index in range(an + ns + ar):
            if pos < len(data) and data[pos] == 0:  # the root name (OPT's owner)
                owner, pos = b"\x00", pos + 1
            else:
                owner, pos = _read_name(data, pos)
            if pos + 10 > len(data):
                raise ValueError("record runs past the end of the packet")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            pos += 10
            if pos + rdlen > len(data):
                raise ValueError("record data runs past the end of the packet")
            if rtype == TYPE_OPT:
                if index < an + ns:
                    raise ValueError("OPT record outside the additional section")
                if edns is not None:
                    raise ValueError("more than one OPT record")
                if owner != b"\x00":
                    raise ValueError("OPT record owner is not the root")
                # the OPT header first, so a FORMERR for a bad option still carries an OPT
                edns = Edns(max(rclass, 512), (ttl >> 16) & 0xFF, bool(ttl & 0x8000), None)
                others: list[tuple[int, bytes]] = []
                edns.ecs = _parse_options(data, pos, rdlen, others)
                edns.options = tuple(others)
            pos += rdlen
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} bytes after the last record")
    except ValueError as exc:
        raise FormErr(str(exc), id_, flags, question, edns) from None
    return Query(id_, flags, question, qname, qtype, qclass, edns)


def name_to_text(wire: bytes) -> str:
    """Wire-format name to presentation format (for logs and explain), e.g. 'www.example.'."""
    out = []
    pos = 0
    while wire[pos]:
        length = wire[pos]
        out.append(wire[pos + 1 : pos + 1 + length].decode("ascii", "backslashreplace"))
        pos += 1 + length
    return ".".join(out) + "."


def text_to_name(text: str) -> bytes:
    """Presentation ('www.example.test.') to lower-case wire format."""
    labels = [lab for lab in text.lower().rstrip(".").split(".") if lab]
    return b"".join(bytes([len(lab)]) + lab.encode("ascii") for lab in labels) + b"\x00"
