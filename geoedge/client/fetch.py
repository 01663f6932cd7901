"""``geoedge fetch URL``: resolve a name through the GeoDNS server as a resolver would for a
client, then fetch the URL from the edge it chose and report what happened.

Rules:

- URLs: ``http://`` and ``https://``; anything else is a usage error. A host that is an IP
  literal is fetched directly, without DNS.
- HTTPS: the edge's certificate is verified for the URL's host (sent as SNI) against
  ``--cacert``, else the system's store plus the running demo's CA
  (``geoedge.demo.certs.demo_ca_file``) when there is one; the report says the TLS version,
  cipher and ALPN protocol negotiated. A certificate that does not verify is a failure.
- DNS: the name is resolved by the stub resolver in :mod:`geoedge.client.stubdns` (its rules are
  there); its failures are reported like the others below.
- HTTP: the answer's addresses are tried in order (a normal client takes the first); one that
  refuses the connection is reported and the next is tried. The request goes to
  ``http://ADDRESS:PORT/path?query`` with the URL's ``Host`` (``host[:port]`` as written).
  ``--repeat N`` sends N requests through the address that answered; ``--each`` then sends
  one more through each of the answer's other addresses (a region's other edges).
- Naming: the edge that answered is found in the topology by address and port; else by the
  response's ``Via`` (``1.1 geoedge-NAME``, our edges' pseudonym) and its region in the
  topology, or else from a ``geoedge-REGION-redis`` Cache-Status member (a shared tier).
- Exit codes: 0 for HTTP status < 500; 1 for status >= 500, DNS failures and network errors;
  2 for usage and configuration errors.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from geoconfig.topology import Topology, load_topology
from geoconfig.validate import ConfigError, host_port
from geoconfig.validate import format_host_port as hostport
from geoedge.client.fetcherror import EXIT_FAIL, EXIT_OK, FetchError, usage_error
from geoedge.client.stubdns import ClientSubnet, DnsSummary, parse_client_ip, resolve

DEFAULT_DNS = "127.0.0.1:5353"
DEFAULT_CONFIG = Path("examples/demo.toml")  # relative to the working directory
VIA_PREFIX = "geoedge-"  # our edges' pseudonym in Via and Cache-Status
REDIS_SUFFIX = "-redis"  # a region's shared tier member: geoedge-REGION-redis
USER_AGENT = "geoedge-fetch"
MAX_LISTED = 6  # addresses shown on the DNS line

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- pure parts: the URL --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    url: str
    host: str  # without brackets
    port: int
    path: str  # path and query, at least "/"
    host_header: str  # host[:port] as written in the URL
    scheme: str = "http"

    @property
    def literal(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_url(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise usage_error(f"bad URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"{parts.scheme}:// URLs" if parts.scheme else "URLs without http://"
        raise usage_error(f"{what} are not supported, only http:// and https://")
    if not parts.hostname:
        raise usage_error(f"no host in URL {url!r}")
    netloc = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, parts.hostname, port or (443 if scheme == "https" else 80), path, netloc,
                  scheme)


# -- pure parts: which edge answered, and the report ----------------------------------------------
def via_edge(via: str | None) -> str | None:
    """The name in the last ``geoedge-NAME`` pseudonym of a Via field (the nearest proxy)."""
    if not via:
        return None
    for hop in reversed(via.split(",")):
        parts = hop.split()
        if len(parts) >= 2 and parts[1].startswith(VIA_PREFIX):
            return parts[1].removeprefix(VIA_PREFIX)
    return None


def redis_region(cache_status: str | None) -> str | None:
    """The region of a ``geoedge-REGION-redis`` member (a region's shared tier), if any."""
    for member in (cache_status or "").split(","):
        name = member.split(";", 1)[0].strip()
        if name.startswith(VIA_PREFIX) and name.endswith(REDIS_SUFFIX):
            return name.removeprefix(VIA_PREFIX).removesuffix(REDIS_SUFFIX) or None
    return None


def locate(topology: Topology | None, address: str, port: int, via: str | None,
           cache_status: str | None = None) -> tuple[str | None, str | None]:
    """(region, edge) for the server that answered; None where it cannot be told."""
    if topology is not None:
        addr = ipaddress.ip_address(address)
        for edge in topology.edges:
            ips = {ipaddress.ip_address(a) for a in (edge.ipv4, edge.ipv6) if a}
            if addr in ips and edge.port == port:
                return edge.region, edge.name
    name = via_edge(via)
    if name is not None and topology is not None:
        try:
            return topology.find_edge(name).region, name
        except KeyError:
            pass
    return redis_region(cache_status), name


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def format_dns_line(s: DnsSummary) -> str:
    if s.subnet is None:
        ecs = "no ECS"
    else:
        scope = "no scope" if s.reply.scope is None else f"scope /{s.reply.scope}"
        ecs = f"ECS {s.subnet}, {scope}"
    tcp = ", over TCP after TC=1" if s.transport == "tcp" else ""
    cname = "".join(f"CNAME {c} -> " for c in s.reply.cnames)
    ttl = "" if s.reply.ttl is None else f"  ttl {s.reply.ttl}"
    addresses = list(s.reply.addresses)
    if len(addresses) > MAX_LISTED:
        addresses[MAX_LISTED:] = [f"... ({len(s.reply.addresses)} addresses)"]
    return f"{s.name} {s.qtype} via {s.server} ({ecs}{tcp}) -> {cname}{', '.join(addresses)}{ttl}"


@dataclass(frozen=True, slots=True)
class Result:
    method: str
    url: str
    address: str
    port: int
    status: int
    reason: str
    cache_status: str | None  # every Cache-Status field, joined
    age: str | None
    size: int
    seconds: float
    region: str | None
    edge: str | None
    dns_seconds: float | None = None  # only for the fetch that followed the query
    failed: tuple[str, ...] = ()  # "ADDRESS:PORT: why" for addresses that refused
    tls: str | None = None  # "TLSv1.3, TLS_AES_256_GCM_SHA384, ALPN http/1.1"


def format_report(r: Result) -> str:
    time_text = f"http {_ms(r.seconds)}"
    if r.dns_seconds is not None:
        time_text = f"dns {_ms(r.dns_seconds)}, {time_text}"
    rows: list[tuple[str, str]] = [("skipped", f) for f in r.failed]
    rows += [
        ("region", r.region or "-"),
        ("edge", f"{r.edge or '-'} ({hostport(r.address, r.port)})"),
        ("status", f"{r.status} {r.reason}".rstrip()),
        ("cache-status", r.cache_status or "-"),
        ("age", r.age or "-"),
        *([("tls", r.tls)] if r.tls else []),
        ("bytes", str(r.size)),
        ("time", time_text),
    ]
    lines = [f"{r.method} {r.url}"]
    lines += [f"  {label:<13} {value}" for label, value in rows]
    return "\n".join(lines)


# -- HTTP I/O -------------------------------------------------------------------------------------
@dataclass
class Fetcher:
    target: Target
    method: str
    headers: list[tuple[str, str]]
    topology: Topology | None
    session: aiohttp.ClientSession
    failed: list[str] = field(default_factory=list)
    where: str = ""  # ADDRESS:PORT of the latest request
    ssl_context: ssl.SSLContext | None = None  # for https:// URLs

    async def once(self, address: str) -> tuple[Result, bytes]:
        self.where = hostport(address, self.target.port)
        url = f"{self.target.scheme}://{self.where}{self.target.path}"
        headers = [("Host", self.target.host_header), ("User-Agent", USER_AGENT),
                   *self.headers]
        tls_args: dict[str, Any] = {}
        if self.target.scheme == "https":
            tls_args = {"ssl": self.ssl_context, "server_hostname": self.target.host}
        start = time.perf_counter()
        async with self.session.request(self.method, url, headers=CIMultiDict(headers),
                                        allow_redirects=False, **tls_args) as resp:
            body = await resp.read()
        connector = self.session.connector
        tls = getattr(connector, "last_tls", None) if tls_args else None
        seconds = time.perf_counter() - start
        via = ", ".join(resp.headers.getall("Via", [])) or None
        cache_status = ", ".join(resp.headers.getall("Cache-Status", [])) or None
        region, edge = locate(self.topology, address, self.target.port, via, cache_status)
        result = Result(self.method, self.target.url, address, self.target.port, resp.status,
                        resp.reason or "", cache_status, resp.headers.get("Age"), len(body),
                        seconds, region, edge, tls=tls)
        return result, body

    async def first(self, addresses: Sequence[str]) -> tuple[str, Result, bytes]:
        """Try the addresses in order until one accepts the connection."""
        for i, address in enumerate(addresses):
            try:
                result, body = await self.once(address)
            except aiohttp.ClientConnectorError as exc:
                errno = exc.os_error.errno
                why = os.strerror(errno) if errno else str(exc.os_error)
                self.failed.append(f"{hostport(address, self.target.port)}: {why}"
                                   + ("; trying the next address"
                                      if i + 1 < len(addresses) else ""))
                continue
            return address, result, body
        raise FetchError(f"no address accepted a connection: {'; '.join(self.failed)}")


def demo_ca_file() -> Path:
    """Where a running demo keeps its CA (geoedge.demo.certs writes it; same path)."""
    return Path(tempfile.gettempdir()) / "geoedge-demo-ca.pem"


class TlsConnector(aiohttp.TCPConnector):
    """Remembers what the latest TLS handshake negotiated (aiohttp may release a response's
    connection before its body is read, so the response cannot tell)."""

    last_tls: str | None = None

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, proto = await super()._wrap_create_connection(*args, **kwargs)
        obj = transport.get_extra_info("ssl_object")
        if obj is not None:
            self.last_tls = (f"{obj.version()}, {obj.cipher()[0]}, "
                             f"ALPN {obj.selected_alpn_protocol() or '-'}")
        return transport, proto


def client_context(cacert: str | None) -> ssl.SSLContext:
    """Verification against ``cacert``, else the system store and the demo's CA if running."""
    try:
        ctx = ssl.create_default_context(cafile=cacert)
        if cacert is None and demo_ca_file().is_file():
            ctx.load_verify_locations(cafile=str(demo_ca_file()))
    except (OSError, ssl.SSLError) as exc:
        raise usage_error(f"--cacert {cacert}: cannot use it: {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])  # what this client speaks
    return ctx


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise usage_error(f"-H must be 'Name: value', got {text!r}")
    if "\r" in value or "\n" in value:
        raise usage_error(f"-H value must be one line: {text!r}")
    return name, value.strip()


# -- the command ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    target: Target
    server: tuple[str, int]
    subnet: ClientSubnet | None
    qtype: str
    method: str
    headers: list[tuple[str, str]]
    repeat: int
    each: bool
    body: bool
    timeout: float
    topology: Topology | None
    ssl_context: ssl.SSLContext | None = None


def options_from(args: argparse.Namespace) -> Options:
    """Validate the command line (FetchError with code 2, ConfigError for the topology)."""
    target = parse_url(args.url)
    subnet = parse_client_ip(args.client_ip) if args.client_ip is not None else None
    try:
        server = host_port(args.dns, "--dns")
    except ConfigError as exc:
        raise usage_error(str(exc)) from None
    if server[1] == 0:
        raise usage_error("--dns: port must not be 0")
    method = args.method.upper()
    if not method.isascii() or not method.isalpha():
        raise usage_error(f"-X: not an HTTP method: {args.method!r}")
    if args.repeat < 1:
        raise usage_error(f"--repeat must be at least 1, got {args.repeat}")
    if not args.timeout > 0:
        raise usage_error(f"--timeout must be greater than 0, got {args.timeout}")
    headers = [parse_header(h) for h in args.header or []]
    if any(n.lower() == "host" for n, _ in headers):
        raise usage_error("-H: Host is taken from the URL")
    config = args.config
    if config is None and DEFAULT_CONFIG.is_file():
        config = str(DEFAULT_CONFIG)
    topology = load_topology(config) if config else None
    ctx = client_context(getattr(args, "cacert", None)) if target.scheme == "https" else None
    return Options(target, server, subnet, "AAAA" if args.ipv6 else "A", method, headers,
                   args.repeat, args.each, args.body, args.timeout, topology, ctx)


async def _fetch_all(opts: Options, addresses: Sequence[str],
                     dns_seconds: float | None) -> int:
    timeout = aiohttp.ClientTimeout(total=opts.timeout)
    connector = TlsConnector(limit=1, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False,
                                     skip_auto_headers=("User-Agent",)) as session:
        fetcher = Fetcher(opts.target, opts.method, opts.headers, opts.topology, session,
                          ssl_context=opts.ssl_context)
        code = EXIT_OK
        address = None
        rounds = opts.repeat + (len(addresses) - 1 if opts.each else 0)
        for i in range(rounds):
            try:
                if address is None:
                    address, result, body = await fetcher.first(addresses)
                    result = dataclasses.replace(result, dns_seconds=dns_seconds,
                                                 failed=tuple(fetcher.failed))
                    others = list(addresses[addresses.index(address) + 1:])
                elif i < opts.repeat:
                    result, body = await fetcher.once(address)
                elif others:
                    result, body = await fetcher.once(others.pop(0))
                else:
                    break
            except TimeoutError:
                raise FetchError(f"HTTP: no complete response from {fetcher.where} "
                                 f"within {opts.timeout:g} s") from None
            except aiohttp.ClientError as exc:
                where = fetcher.where
                raise FetchError(f"HTTP: {opts.method} to {where} failed: "
                                 f"{exc.__class__.__name__}: {exc}") from None
            if i:
                print()
            print(format_report(result), flush=True)
            if opts.body:
                sys.stdout.buffer.write(body)
                sys.stdout.flush()
            if result.status >= 500:
                code = EXIT_FAIL
        return code


def run_fetch(args: argparse.Namespace) -> int:
    try:
        opts = options_from(args)
        literal = opts.target.literal
        if literal is not None:
            addresses: Sequence[str] = (str(literal),)
            dns_seconds = None
            print(f"{opts.target.host}: an IP address, no DNS query")
        else:
            summary = resolve(opts.server, opts.target.host, opts.qtype, opts.subnet,
                              opts.timeout)
            addresses, dns_seconds = summary.reply.addresses, summary.seconds
            print(format_dns_line(summary))
        sys.stdout.flush()
        return asyncio.run(_fetch_all(opts, addresses, dns_seconds))
    except FetchError as exc:
        sys.stdout.flush()
        print(f"geoedge fetch: {exc}", file=sys.stderr)
        return exc.code


__all__ = [
    "DEFAULT_DNS",
    "Result",
    "Target",
    "format_dns_line",
    "format_report",
    "locate",
    "parse_url",
    "redis_region",
    "run_fetch",
    "via_edge",
]
