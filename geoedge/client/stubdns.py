"""The stub DNS resolver of ``geoedge fetch``: ask the GeoDNS server for a name as a resolver
would for a client, and read its answer.

Rules:

- Query: one question (A, or AAAA with ``--ipv6``), RD=0, EDNS0 with a 1232-byte UDP size.
  With ``--client-ip IP[/PREFIX]`` the query carries an EDNS Client Subnet option (RFC 7871
  §6): family, source prefix (default /24 for IPv4, /56 for IPv6), SCOPE 0, and only the
  address octets the prefix covers (bits past it cleared). Without it there is no ECS option:
  the server locates the client by the address the query comes from, as for any stub client.
  A bad ``--client-ip`` is a usage error (exit 2).
- Transport: UDP, waiting ``timeout`` seconds per try, one retry; replies with another ID or
  question are ignored; a reply with TC=1 is followed by the same query over TCP (RFC 7766
  framing). A timeout, a refused query, an RCODE other than NOERROR, or no address in the
  answer is a :class:`~geoedge.client.fetcherror.FetchError` naming the server (exit 1).
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import dnslib

from geoconfig.validate import format_host_port as hostport
from geoedge.client.fetcherror import FetchError, usage_error

UDP_PAYLOAD = 1232
OPTION_ECS = 8
TRIES = 2  # UDP: one retry


# -- pure parts: the client subnet, the query and the reply ---------------------------------------
@dataclass(frozen=True, slots=True)
class ClientSubnet:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @property
    def family(self) -> int:
        return 1 if self.network.version == 4 else 2

    @property
    def prefix(self) -> int:
        return self.network.prefixlen

    def option_data(self) -> bytes:
        """The ECS option's data (RFC 7871 §6): FAMILY, SOURCE, SCOPE 0, ADDRESS octets."""
        octets = (self.prefix + 7) // 8
        address = self.network.network_address.packed[:octets]
        return struct.pack("!HBB", self.family, self.prefix, 0) + address

    def __str__(self) -> str:
        return str(self.network)


def parse_client_ip(text: str) -> ClientSubnet:
    """``IP`` (prefix /24 or /56) or ``IP/PREFIX``; host bits past the prefix are dropped."""
    address_text, sep, prefix_text = text.partition("/")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise usage_error(f"--client-ip: not an IP address: {address_text!r}") from None
    if "%" in address_text:
        raise usage_error(f"--client-ip: no zone index (%...) allowed: {text!r}")
    if sep:
        if not (prefix_text.isascii() and prefix_text.isdigit()):
            raise usage_error(f"--client-ip: prefix must be a number, got {prefix_text!r}")
        prefix = int(prefix_text)
        if prefix > address.max_prefixlen:
            raise usage_error(f"--client-ip: prefix /{prefix} is longer than an "
                              f"IPv{address.version} address")
    else:
        prefix = 24 if address.version == 4 else 56
    return ClientSubnet(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def build_query(name: str, qtype: str, subnet: ClientSubnet | None, qid: int) -> bytes:
    """An authoritative-style query (RD=0) with EDNS0 and, when given, an ECS option."""
    record = dnslib.DNSRecord(dnslib.DNSHeader(id=qid, rd=0),
                              q=dnslib.DNSQuestion(name, getattr(dnslib.QTYPE, qtype)))
    options = [] if subnet is None else [dnslib.EDNSOption(OPTION_ECS, subnet.option_data())]
    record.add_ar(dnslib.EDNS0(udp_len=UDP_PAYLOAD, opts=options))
    return bytes(record.pack())


@dataclass(frozen=True, slots=True)
class DnsReply:
    rcode: str
    truncated: bool
    addresses: tuple[str, ...]
    ttl: int | None  # the smallest TTL of the address records
    scope: int | None  # the ECS SCOPE PREFIX-LENGTH, None without an ECS option
    cnames: tuple[str, ...] = ()


def parse_reply(data: bytes, qid: int, name: str, qtype: str) -> DnsReply | None:
    """The reply's outcome, or None when it is not a reply to this query (ID or question).

    Raises FetchError when the bytes are not a DNS message."""
    try:
        record = dnslib.DNSRecord.parse(data)
    except (dnslib.DNSError, struct.error, IndexError, ValueError) as exc:
        raise FetchError(f"malformed DNS reply: {exc}") from None
    if record.header.id != qid or not record.header.qr:
        return None
    want = getattr(dnslib.QTYPE, qtype)
    if record.questions and (str(record.q.qname).lower().rstrip(".") != name.lower().rstrip(".")
                             or record.q.qtype != want):
        return None
    addresses = [(str(ipaddress.ip_address(str(rr.rdata))), rr.ttl) for rr in record.rr
                 if rr.rtype == want]
    cnames = tuple(str(rr.rdata).rstrip(".") for rr in record.rr
                   if rr.rtype == dnslib.QTYPE.CNAME)
    scope = None
    for rr in record.ar:
        if rr.rtype != dnslib.QTYPE.OPT:
            continue
        for opt in rr.rdata:
            if opt.code == OPTION_ECS and len(opt.data) >= 4:
                scope = opt.data[3]
    return DnsReply(
        rcode=dnslib.RCODE.get(record.header.rcode, str(record.header.rcode)),
        truncated=bool(record.header.tc),
        addresses=tuple(a for a, _ in addresses),
        ttl=min((t for _, t in addresses), default=None),
        scope=scope,
        cnames=cnames,
    )


def needs_tcp(reply: DnsReply) -> bool:
    """A truncated UDP reply is not the answer: ask again over TCP (RFC 7766 §5)."""
    return reply.truncated


def check_reply(reply: DnsReply, server: str, name: str, qtype: str) -> None:
    if reply.rcode != "NOERROR":
        raise FetchError(f"DNS: {server} answered {reply.rcode} for {name} {qtype}")
    if not reply.addresses:
        raise FetchError(f"DNS: {server} answered NOERROR with no {qtype} address for {name}")


@dataclass(frozen=True, slots=True)
class DnsSummary:
    name: str
    qtype: str
    server: str
    subnet: ClientSubnet | None
    reply: DnsReply
    transport: str  # "udp" or "tcp"
    seconds: float


Accept = Callable[[bytes], DnsReply | None]


# -- DNS I/O --------------------------------------------------------------------------------------
def _sockaddr(host: str, port: int, kind: socket.SocketKind) -> tuple[socket.AddressFamily,
                                                                       tuple]:
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=kind)[0]
    except socket.gaierror as exc:
        raise FetchError(f"DNS server {host}: {exc.strerror}") from None
    return family, sockaddr


def query_udp(host: str, port: int, data: bytes, accept: Accept, timeout: float,
              tries: int = TRIES) -> DnsReply | None:
    """Send ``data`` over UDP up to ``tries`` times; the first reply ``accept`` takes, or None
    after the last timeout. ``accept(bytes)`` returns a DnsReply or None (not ours)."""
    family, sockaddr = _sockaddr(host, port, socket.SOCK_DGRAM)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(sockaddr)
        for _ in range(tries):
            sock.send(data)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet = sock.recv(65535)
                except TimeoutError:
                    break
                reply = accept(packet)
                if reply is not None:
                    return reply
    return None


def query_tcp(host: str, port: int, data: bytes, accept: Accept, timeout: float) -> DnsReply:
    """The same query over TCP (RFC 7766 framing); replies ``accept`` rejects are skipped."""
    family, sockaddr = _sockaddr(host, port, socket.SOCK_STREAM)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        sock.sendall(struct.pack("!H", len(data)) + data)
        while True:
            length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
            reply = accept(_recv_exactly(sock, length))
            if reply is not None:
                return reply


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        out += chunk
    return bytes(out)


def resolve(server: tuple[str, int], name: str, qtype: str, subnet: ClientSubnet | None,
            timeout: float) -> DnsSummary:
    host, port = server
    where = hostport(host, port)
    qid = random.randrange(1 << 16)
    data = build_query(name, qtype, subnet, qid)

    def accept(packet: bytes) -> DnsReply | None:
        return parse_reply(packet, qid, name, qtype)

    start = time.perf_counter()
    transport = "udp"
    try:
        reply = query_udp(host, port, data, accept, timeout)
    except ConnectionRefusedError:
        raise FetchError(f"DNS: {where} refused the query (nothing listening on UDP)") from None
    except OSError as exc:
        raise FetchError(f"DNS: cannot query {where} over UDP: {exc.strerror or exc}") from None
    if reply is None:
        raise FetchError(f"DNS: no reply from {where} for {name} {qtype} "
                         f"({TRIES} tries, {timeout:g} s each)")
    if needs_tcp(reply):
        transport = "tcp"
        try:
            reply = query_tcp(host, port, data, accept, timeout)
        except TimeoutError:
            raise FetchError(f"DNS: no reply from {where} over TCP for {name} {qtype} "
                             f"within {timeout:g} s") from None
        except (OSError, struct.error) as exc:
            raise FetchError(f"DNS: TCP query to {where} (after TC=1) failed: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    seconds = time.perf_counter() - start
    check_reply(reply, where, name, qtype)
    return DnsSummary(name, qtype, where, subnet, reply, transport, seconds)


__all__ = [
    "ClientSubnet",
    "DnsReply",
    "DnsSummary",
    "build_query",
    "check_reply",
    "needs_tcp",
    "parse_client_ip",
    "parse_reply",
    "query_tcp",
    "query_udp",
    "resolve",
]
