"""The answering engine: bytes in, bytes out, with caches so the hot path does no heavy work.

Rules:

- Responses: QR=1, AA as the answer says, RA=0, RD and CD copied from the query, TC only when
  the answer does not fit. The question section is the query's own bytes (its case echoed).
- EDNS (RFC 6891): an OPT goes back only when the query had one, with our payload size and the
  DO bit echoed; a version above 0 gets BADVERS (extended RCODE 16) and no answer.
- UDP size: 512 without EDNS, else min(client's size, ``dns.max_udp_payload``). An answer that
  does not fit goes back empty with TC=1 (the client retries over TCP).
- Client location (RFC 7871 §7.1.1): the ECS address when present, unless its source prefix is 0,
  in which case the resolver's own address is used. The ECS address is looked up in the region
  map (geodns/maps.py), private and unlocated addresses too (their block of the database, the
  default region first, as gdnsd); only addresses the map leaves to the database (IPv4 aliases
  in the IPv6 space) are located by the database, and by the resolver if not global.
- ECS in the response: family, source prefix and address echoed; SCOPE is the prefix length of
  the region map's entry holding the address (merged for the current health state) when the
  answer depends on location and ECS was used, else 0. A query's SCOPE must be 0 (FORMERR,
  RFC 7871 §7.1.2: see wire.py).
- Steering (geodns/steering.py): each geo name's serve picks the region and the edges. There
  is one region map per distinct selection of the serves (``map_states``; ``maps`` is the
  first, the most names', and the only one the C cold path uses: other names get no C
  templates); a name's scope comes from its own map. A weighted name's addresses are drawn for
  each response before packing: its packed records are cached per drawn set, its responses
  never (no wire cache entry, no template).
- Caches: ``decisions`` (client key -> ranking), ``rankings`` (location -> ranking),
  ``packed`` (question + ranking -> wire answer) and ``wire_udp``/``wire_tcp`` (query bytes
  after the ID -> response bytes after the ID). The health-dependent ones are replaced by new
  dicts on every health change, so a thread that computed an answer against old health can only
  write it into a dict nobody reads any more. All are bounded: flushed when full, except the
  wire caches, which keep two generations (``wire_udp`` and ``wire_udp_old``, each at most
  ``cache_size`` entries): when the current one is full it becomes the old one (the previous old
  one is dropped), and a hit in the old one is copied into the current one. So queries that are
  never asked again (random names, as in a random-subdomain flood) cannot flush the answers that
  are asked all the time; a full flush would send all of those through the slow path again.
  Generation swaps (a rotation, a health change) hold ``_swap``, and a health change clears the
  old generation before the current one, so a reader that sees the new current generation can
  never copy a pre-change answer out of the old one.
- Other EDNS options (NSID, COOKIE, TCP keepalive; geodns/options.py for their rules): a
  query carrying any is parsed by ``parse_query`` (the C scan and cold path leave it to
  Python) and its answer is never cached (a cookie answer depends on the time and the client;
  a keepalive answer on the connection). Options we do not know are ignored (RFC 6891 §6.1.2).
  CHAOS queries (class 3) are answered by Python too (the C path handles only IN and ANY).
- EDE (RFC 8914): a REFUSED/NOTIMP answer to a query with EDNS carries the answer's EDE
  option; such answers are never C templates, so the C cold path leaves them to Python.
- DNSSEC (geodns/dnssec/): for a signed zone, answers to queries with DO are signed in
  ``_build`` (the packed cache and the C templates are keyed with DO); ``refresh_signatures``
  starts a new signing generation when due and drops every cached answer as a health change.
- Parsing: with ``dns.udp_fast_path`` on and the C extension built, the usual query's fields
  come from ``_fastudp.scan_common`` (the same tuple as ``query_fields(parse_query(data))``,
  compared in the tests); every other packet, and every packet without it, goes through
  ``parse_query``. Both then take the same ``_answer_fields``.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import struct
import threading
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geoconfig.topology import Topology
from geoconfig.zoneconfig import GeoName
from geodata import GeoReader, Location, rank_regions, select_region
from geodata.regionmap import SLOW, RegionMap
from geodns.answer import (
    CLASS_CH,
    EDE_NOT_SUPPORTED,
    FORMERR,
    REFUSED,
    Answer,
    Packed,
    build_answer,
    chaos_answer,
    nxdomain_fast,
    pack_answer,
)
from geodns.maps import Key, MapState, loaded
from geodns.options import (
    BADCOOKIE,
    COOKIE,
    KEEPALIVE,
    NSID,
    Cookies,
    ede_option,
    keepalive_option,
    option,
)
from geodns.steering import Serve, answer_set, choose, serve_for
from geodns.wire import (
    Drop,
    Ecs,
    Edns,
    Fields,
    FormErr,
    Query,
    c_scan_common,
    parse_query,
    query_fields,
)
from geodns.zonedata import ZoneSet, compile_zone

if TYPE_CHECKING:
    from geodns.dnssec.signer import Dnssec

_HEADER = struct.Struct("!HHHHHH")
_OPT_FIXED = struct.Struct("!BHHIH")
_ECS_HEAD = struct.Struct("!HHHBB")
BADVERS = 16
INDEPENDENT = 0xFFFE  # template key of a name whose answer does not depend on location
_TEMPLATE = struct.Struct("!HHHHB")  # flags, an, ns, ar, location-dependent; then the body
_TKEY = struct.Struct("!HHH")  # qtype, qclass, order index (or INDEPENDENT)
MAX_CACHED_QUERY = 512  # bytes; larger (odd) queries are answered but never cached


@dataclass(frozen=True, slots=True)
class Decision:
    order: tuple[str, ...]  # regions, nearest first
    scope: int  # ECS scope prefix length to return for location-dependent answers
    location: Location | None
    val: int = -1  # the region map's order index, when located by the map


class Engine:
    """Everything needed to answer, built from one topology and one database.

    ``health`` maps edge names to up/down; an edge that is absent counts as up. It is replaced
    (never mutated) through :meth:`set_health`.
    """

    def __init__(self, topology: Topology, reader: GeoReader, cache_size: int | None = None,
                 regionmap: RegionMap | None = None):
        self.topology = topology
        self.reader = reader
        compiled = [compile_zone(z) for z in topology.zones]
        self.dnssec: Dnssec | None = None
        if any(z.dnssec is not None for z in topology.zones):
            from geodns.dnssec.signer import load_dnssec  # dnspython, cryptography: when signing

            self.dnssec = load_dnssec(topology, compiled)  # ConfigError: a signed zone's bad key
        self.zones = ZoneSet(compiled)
        self.dependent = self.zones.location_dependent_names()
        self.regions = [rc.region for rc in topology.regions]
        self.edges = {rc.name: rc.edges for rc in topology.regions}
        self.max_udp = topology.dns.max_udp_payload
        dns = topology.dns
        self.nsid = dns.nsid.encode("ascii")
        self.identity, self.version = dns.identity, dns.version
        secret = bytes.fromhex(dns.cookie_secret) if dns.cookie_secret else secrets.token_bytes(16)
        self.cookies = Cookies(secret, dns.cookie_rotation) if dns.cookies else None
        self.clock = time.time
        self.cache_size = cache_size or topology.dns.answer_cache_size
        self.health: Mapping[str, bool] = {}
        self.decisions: dict[object, Decision | None] = {}
        self.rankings: dict[object, tuple[str, ...]] = {}
        self.selections: dict[tuple[str, ...], tuple[str, bool]] = {}
        self.packed: dict[tuple, Packed] = {}
        self.fingerprint: tuple = ()  # the loaded files' identity, for the reload watcher
        # wire-cache hits, misses, region-map hits, misses (geodns/metrics.py); kept on reload
        self.counts = [0, 0, 0, 0]
        self.wire_udp: dict[bytes, bytes | dict[str, bytes]] = {}
        self.wire_tcp: dict[bytes, bytes | dict[str, bytes]] = {}
        # the usual query's fields straight from C (same as query_fields(parse_query(data)))
        self.scan_common = c_scan_common() if topology.dns.udp_fast_path else None
        self.wire_udp_old: dict[bytes, bytes | dict[str, bytes]] = {}
        self.wire_tcp_old: dict[bytes, bytes | dict[str, bytes]] = {}
        self._swap = threading.Lock()  # UDP threads rotate; the loop thread sets health
        self.draw = random.Random().random  # weighted answers (geodns/steering.py)
        if regionmap is None:
            regionmap = loaded(reader.path, self.regions, topology.default_region,
                               topology.geoip.map_cache_dir)
        self._steering(regionmap)
        # the C cold path's data (geodns/_coldpath.h): templates by name/type/class/order index
        self.templates: dict[bytes, bytes] = {}
        # a third item marks a signed zone: the C path leaves its NXDOMAIN with DO to Python
        signed = self.dnssec.signers if self.dnssec is not None else {}
        self._origins = {z.origin: (frozenset(z.existing), z.negative_parts)
                         + ((True,) if z.origin in signed else ()) for z in self.zones.zones}
        self._fast: tuple | None = None
        self.refresh_signatures()

    def _steering(self, regionmap: RegionMap) -> None:
        """Each geo name's serve (geodns/steering.py) and one region map per distinct selection
        of them (the widest scopes for each); ``maps`` is the one of the most names, which the
        C cold path uses (only its names get C templates)."""
        geo = self.zones.geo_names()
        self.serves: dict[GeoName, tuple[int, Serve]] = {}
        groups: dict[tuple, list[Serve]] = {}
        for i, g in enumerate(geo.values()):
            serve = serve_for(self.topology, g)
            self.serves[g] = (i, serve)
            groups.setdefault(serve.selection, []).append(serve)
        ranked = sorted(groups.values(), key=len, reverse=True)
        self.map_serves: list[Serve | None] = [ms[0] for ms in ranked] or [None]
        index = {ms[0].selection: i for i, ms in enumerate(ranked)}
        self.map_of: dict[bytes, int] = {}  # location-dependent name -> its map
        self.weighted: dict[bytes, GeoName] = {}  # name -> the weighted geo name it leads to
        for name in self.dependent:
            target = name
            for _ in range(17):
                if target in geo or (nxt := self.zones.cname_target(target)) is None:
                    break
                target = nxt
            if target in geo:
                self.map_of[name] = index[self.serves[geo[target]][1].selection]
                if self.serves[geo[target]][1].weighted:
                    self.weighted[name] = geo[target]
        self.map_states = [MapState(regionmap, self.merge_key({}, serve, regionmap.orders),
                                    eager=i == 0) for i, serve in enumerate(self.map_serves)]
        self.maps = self.map_states[0]

    # -- health -------------------------------------------------------------------------------
    def set_health(self, health: Mapping[str, bool]) -> None:
        self.health = dict(health)
        for serve, state in zip(self.map_serves, self.map_states, strict=True):
            state.health_changed(self.merge_key(self.health, serve, state.full.orders))
        self.selections = {}
        self.packed = {}
        self.templates = {}
        with self._swap:
            self.wire_udp_old = {}  # the old generation first: see the module's rules
            self.wire_tcp_old = {}
            self.wire_udp = {}
            self.wire_tcp = {}

    def refresh_signatures(self) -> bool:
        """Begin a new signing generation when one is due (geodns/dnssec/policy.py), dropping
        every cached answer as a health change does; called at start and periodically."""
        dnssec = self.dnssec
        if dnssec is None or not dnssec.due(int(self.clock())):
            return False
        dnssec.new_generation(int(self.clock()), self.zones)
        self.packed = {}
        self.templates = {}
        with self._swap:
            self.wire_udp_old = {}
            self.wire_tcp_old = {}
            self.wire_udp = {}
            self.wire_tcp = {}
        return True

    def merge_key(self, health: Mapping[str, bool], serve: Serve | None,
                  orders: tuple[tuple[str, ...], ...]) -> Key:
        """What the answers of ``serve``'s names depend on in ``health``, as a function of a
        map's order index (no geo name: nothing)."""
        if serve is None:
            return lambda val: ()
        return lambda val: choose(serve, orders[val], health)

    def region_up(self, region: str) -> bool:
        health = self.health
        return any(health.get(e.name, True) for e in self.edges[region])

    def select(self, order: tuple[str, ...]) -> tuple[str, bool]:
        """(region, failed_open) for a ranking, cached until health changes."""
        selections = self.selections
        hit = selections.get(order)
        if hit is None:
            sel = select_region(order, self.region_up)
            hit = selections[order] = (sel.region, sel.failed_open)
        return hit

    def choice(self, geo: GeoName, order: tuple[str, ...]) -> tuple[str, str]:
        """(region, state) for a geo name and a client's order (steering.choose), cached
        until health changes."""
        index, serve = self.serves[geo]
        key = (index, order)
        hit = self.selections.get(key)
        if hit is None:
            hit = self.selections[key] = choose(serve, order, self.health)  # type: ignore[index]
        return hit  # type: ignore[return-value]

    def addresses(self, geo: GeoName, order: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        return answer_set(self.serves[geo][1], self.choice(geo, order), self.health, self.draw)

    # -- location -----------------------------------------------------------------------------
    def decide(self, ecs: Ecs | None, client_ip: str, maps: MapState | None = None) -> Decision:
        """The ranking for a client: by its ECS subnet when usable, else by the resolver;
        ``maps``: the region map of the name asked (default: ``maps``)."""
        decisions = self.decisions
        if ecs is not None and ecs.source:
            active = (maps or self.maps).active
            val, scope = active.lookup(ecs.family, ecs.padded())
            if val != SLOW:
                self.counts[2] += 1
                return Decision(active.orders[val], scope, None, val)
            self.counts[3] += 1
            ecs_key = (ecs.family, ecs.source, ecs.address)
            hit = decisions.get(ecs_key, False)
            if hit is False:
                addr = ipaddress.ip_address(ecs.padded())
                hit = self.locate(addr, scoped=True) if addr.is_global else None
                self._remember(decisions, ecs_key, hit)
            if hit is not None:
                return hit
        hit = decisions.get(client_ip)
        if hit is None:
            ip = ipaddress.ip_address(client_ip)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            hit = self.locate(ip, scoped=False)
            self._remember(decisions, client_ip, hit)
        return hit

    def locate(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
               scoped: bool) -> Decision:
        """The ranking for one address (``scoped``: its database prefix is the ECS scope)."""
        location = self.reader.locate(ip)
        loc_key = (location.found, location.latitude, location.longitude, location.country,
                   location.continent)
        order = self.rankings.get(loc_key)
        if order is None:
            order = rank_regions(location, self.regions, self.topology.default_region).order
            self._remember(self.rankings, loc_key, order)
        return Decision(order, location.prefix_len if scoped else 0, location)

    def _remember(self, cache: dict, key: object, value: object) -> None:
        if len(cache) >= self.cache_size:
            cache.clear()  # bounded; a full flush is cheaper than LRU bookkeeping per query
        cache[key] = value

    # -- answering ----------------------------------------------------------------------------
    def respond(self, data: bytes, client_ip: str, tcp: bool = False,
                idle_timeout: float = 0.0) -> bytes | None:
        """The response to one query, or None when the packet gets no answer.

        Fast path: a response depends only on the query's bytes after the ID (and, for
        location-dependent answers located by the resolver's address, on that address), so
        responses are cached by those bytes and only the ID is patched in. ``idle_timeout``:
        the TCP connection's, for the keepalive option.
        """
        cache = self.wire_tcp if tcp else self.wire_udp
        key = data[2:]
        hit = cache.get(key)
        if hit is None:
            hit = (self.wire_tcp_old if tcp else self.wire_udp_old).get(key)
            if hit is not None:  # asked again: into the current generation
                self._store(cache, key, hit, tcp)
        counts = self.counts
        if hit is not None:
            if hit.__class__ is bytes:
                counts[0] += 1
                return data[:2] + hit
            by_client = hit.get(client_ip)
            if by_client is not None:
                counts[0] += 1
                return data[:2] + by_client
        counts[1] += 1
        response, per_client = self.respond_uncached(data, client_ip, tcp, idle_timeout)
        if response is not None and len(data) <= MAX_CACHED_QUERY and per_client is not None:
            if per_client:
                if hit is None or hit.__class__ is bytes:
                    hit = {}
                    self._store(cache, key, hit, tcp)
                self._remember(hit, client_ip, response[2:])
            else:
                self._store(cache, key, response[2:], tcp)
        return response

    def _store(self, cache: dict, key: bytes, value: bytes | dict[str, bytes], tcp: bool) -> None:
        """Put an answer into ``cache``, the current wire generation when ``respond`` began."""
        if len(cache) >= self.cache_size:
            fresh: dict[bytes, bytes | dict[str, bytes]] = {}
            with self._swap:
                if tcp and cache is self.wire_tcp:
                    self.wire_tcp_old, self.wire_tcp = cache, fresh
                elif not tcp and cache is self.wire_udp:
                    self.wire_udp_old, self.wire_udp = cache, fresh
                else:  # replaced meanwhile (a health change): nobody reads it any more
                    return
            cache = fresh
        cache[key] = value

    def respond_uncached(self, data: bytes, client_ip: str, tcp: bool,
                         idle_timeout: float = 0.0) -> tuple[bytes | None, bool | None]:
        """(response, whether it depends on the client's own address; None: never cache)."""
        scan = self.scan_common
        fields = scan(data) if scan is not None else None
        if fields is None or fields[7] or fields[1] & 0x7800:  # not opcode 0 + EDNS version 0
            try:
                q = parse_query(data)
            except Drop:
                return None, False
            except FormErr as err:
                # other opcodes have other rules (e.g. DSO has no question): not implemented
                rcode = FORMERR if (err.flags >> 11) & 0xF == 0 else 4
                return self._error(err.id, err.flags, err.question, err.edns, rcode), False
            edns = q.edns
            if edns is not None and edns.version > 0:
                return self._error(q.id, q.flags, q.question, edns, BADVERS), False
            if q.opcode != 0:  # NOTIMP
                extra = ede_option(EDE_NOT_SUPPORTED, "opcode") if edns is not None else b""
                return self._error(q.id, q.flags, q.question, edns, 4, extra), False
            if edns is not None and edns.options:
                return self._answer_options(q, client_ip, tcp, idle_timeout), None
            fields = query_fields(q)
        return self._answer_fields(fields, client_ip, tcp)

    def _answer_options(self, q: Query, client_ip: str, tcp: bool, idle_timeout: float) -> bytes:
        """A query with EDNS options besides ECS: NSID, COOKIE and keepalive answered (see
        geodns/options.py), the rest ignored."""
        edns = q.edns
        assert edns is not None
        extra: list[bytes] = []
        cookie = None
        for code, data in edns.options:
            if code == NSID and self.nsid:
                extra.append(option(NSID, self.nsid))
            elif code == KEEPALIVE:
                if tcp and data:  # a TIMEOUT in a query (RFC 7828 §3.2.1)
                    return self._error(q.id, q.flags, q.question, edns, FORMERR)
                if tcp:
                    extra.append(keepalive_option(idle_timeout))
            elif code == COOKIE and self.cookies is not None and cookie is None:
                now = int(self.clock())
                cookie = self.cookies.check(data, client_ip, now)
                if cookie is None:
                    return self._error(q.id, q.flags, q.question, edns, FORMERR)
                fresh = cookie.client + self.cookies.server_cookie(cookie.client, client_ip, now)
                extra.append(option(COOKIE, fresh))
        if cookie is not None and cookie.sent_server and not cookie.valid and not tcp:
            return self._error(q.id, q.flags, q.question, edns, BADCOOKIE, b"".join(extra))
        return self._answer_fields(query_fields(q), client_ip, tcp, b"".join(extra))[0]

    def _answer_fields(self, fields: Fields, client_ip: str, tcp: bool,
                       extra: bytes = b"") -> tuple[bytes, bool]:
        """The response to a well-formed opcode-0 query given as ``query_fields``; ``extra``:
        more options for the OPT (the query has one)."""
        id_, flags, question, qname, qtype, qclass, size, _, do, family, source, address = fields
        templates = self.templates  # before deciding: a health change meanwhile replaces it
        order: tuple[str, ...] | None = None
        scope = 0
        by_resolver = False
        tval = INDEPENDENT
        primary = True
        if qname in self.dependent:
            group = self.map_of.get(qname, 0)
            primary = group == 0
            decision = self.decide(Ecs(family, source, address) if family else None, client_ip,
                                   self.map_states[group])
            order, scope, by_resolver = decision.order, decision.scope, not decision.scope
            tval = decision.val
        key: tuple = (qname, qtype, qclass, order, tcp and qtype == 255, do)
        drawn = None  # a weighted name's addresses, drawn for this response
        weighted = self.weighted.get(qname) if order is not None else None
        if weighted is not None and qtype in (1, 28, 255):
            drawn = self.addresses(weighted, order)  # type: ignore[arg-type]
            key += (drawn,)  # packed once per drawn set; the response is never cached
        packed_cache = self.packed
        entry = packed_cache.get(key)
        if entry is None:
            entry = self._build(qname, qtype, qclass, order, tcp, drawn, do)
            self._remember(packed_cache, key, entry)
        cacheable = drawn is None
        if not tcp and tval >= 0 and entry.ede is None and cacheable and primary:  # C cold path
            tclass = qclass | (0x8000 if do else 0)  # DO answers differ (signed zones)
            self._remember(templates, qname + _TKEY.pack(qtype, tclass, tval),
                           _TEMPLATE.pack(entry.flags, entry.ancount, entry.nscount,
                                          entry.arcount, entry.location_dependent) + entry.body)
        if not entry.location_dependent:
            scope, by_resolver = 0, False
        out_flags = 0x8000 | (flags & 0x7910) | entry.flags  # QR, opcode/RD/CD copied, AA/RCODE
        opt = b""
        if size >= 0:
            options = b""
            if family:
                options = _ECS_HEAD.pack(8, 4 + len(address), family, source, scope) + address
            if entry.ede is not None:
                options += ede_option(*entry.ede)
            options += extra
            opt = _OPT_FIXED.pack(0, 41, self.max_udp, 0x8000 if do else 0, len(options))
            opt += options
        extra = 1 if opt else 0
        wire = b"".join((
            _HEADER.pack(id_, out_flags, 1, entry.ancount, entry.nscount, entry.arcount + extra),
            question, entry.body, opt,
        ))
        if not tcp:
            limit = 512 if size < 0 else min(size, self.max_udp)
            if len(wire) > limit:
                wire = _HEADER.pack(id_, out_flags | 0x0200, 1, 0, 0, extra) + question + opt
        return wire, by_resolver if cacheable else None  # type: ignore[return-value]

    def _build(self, qname: bytes, qtype: int, qclass: int, order: tuple[str, ...] | None,
               tcp: bool, drawn: tuple[tuple[str, ...], ...] | None = None,
               do: bool = False) -> Packed:
        """The packed answer; ``drawn``: the addresses of the (weighted) geo name it leads to;
        ``do``: signed, when the zone is (geodns/dnssec)."""
        if qclass == CLASS_CH:
            chaos = chaos_answer(qname, qtype, self.identity, self.version)
            return pack_answer(chaos, qname, qtype, qclass)
        sign = do and self.dnssec is not None
        fast = None if sign else nxdomain_fast(self.zones, qname, qtype, qclass)
        if fast is not None:
            return fast

        def resolve(geo: GeoName) -> tuple[tuple[str, ...], ...]:
            if drawn is not None:
                return drawn
            return self.addresses(geo, order or (self.topology.default_region,))

        answer: Answer = build_answer(self.zones, qname, qtype, qclass, resolve, tcp)
        if sign:
            assert self.dnssec is not None
            answer = self.dnssec.sign_answer(answer, qname, qtype, self.zones)
        return pack_answer(answer, qname, qtype, qclass, self.zones.packed)

    def fast_state(self) -> tuple:
        """The C cold path's state (see geodns/_coldpath.h), rebuilt when the active map or
        the templates (health) change."""
        active, templates = self.maps.active, self.templates
        cached = self._fast
        if cached is None or cached[0] is not active or cached[1] is not templates:
            state = (array("I", active.v4.starts).tobytes(), active.v4.plens,
                     active.v4.vals.tobytes(), array("Q", active.v6.starts).tobytes(),
                     active.v6.plens, active.v6.vals.tobytes(), templates,
                     frozenset(self.dependent), self._origins, self.max_udp)
            cached = self._fast = (active, templates, state)
        return cached[2]

    def _opt(self, edns: Edns, ecs: Ecs | None, scope: int, ext_rcode: int = 0,
             extra: bytes = b"") -> bytes:
        options = b""
        if ecs is not None:
            options = _ECS_HEAD.pack(8, 4 + len(ecs.address), ecs.family, ecs.source, scope)
            options += ecs.address
        options += extra
        ttl = (ext_rcode << 24) | (0x8000 if edns.do else 0)
        return _OPT_FIXED.pack(0, 41, self.max_udp, ttl, len(options)) + options

    def _error(self, id_: int, flags: int, question: bytes | None, edns: Edns | None,
               rcode: int, extra: bytes = b"") -> bytes:
        out_flags = 0x8000 | (flags & 0x7910) | (rcode & 0xF)
        opt = b""
        if edns is not None:
            opt = self._opt(edns, edns.ecs if rcode != FORMERR else None, 0, rcode >> 4, extra)
        qd = 1 if question else 0
        header = _HEADER.pack(id_, out_flags, qd, 0, 0, 1 if opt else 0)
        return header + (question or b"") + opt


__all__ = ["REFUSED", "Decision", "Engine"]
