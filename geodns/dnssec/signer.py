"""Online signing of answers: RRSIGs added to the RRsets of an :class:`Answer`, compact denial.

Rules (RFC 4034, RFC 4035 §3.1, RFC 9824; decisions in geodns/dnssec/policy.py):

- Every RRset of an answer whose owner is in a signed zone gets one RRSIG per key of that
  zone, right after the RRset, in every section. RRsets of unsigned zones (a CNAME leading
  out of a signed zone) stay as they are.
- Signatures are cached per (owner, type, TTL, RDATA) for the current generation: static
  RRsets are signed at load (``presign``), a geo RRset the first time that answer set is
  given; a new generation (``new_generation``) drops the cache. Denial NSECs for names that do
  not exist are signed per query and never cached (a random-name flood cannot fill the
  cache); the cache is flushed when full.
- NXDOMAIN and NODATA at the final name of the answer (after its CNAMEs) in a signed zone get
  the zone's negative SOA with its RRSIG and a black-lie NSEC with its RRSIG; NXDOMAIN is
  answered NOERROR (RFC 9824 §3).
- The DNSKEY RRset (one CSK per key file) is served at the apex: ``dnskey_records`` are added
  to the compiled zone before it is packed.
- Crypto: dnspython's key objects (``dns.dnssecalgs``, on ``cryptography``) sign the RRSIG
  input; the input (RRSIG RDATA and canonical RRset, RFC 4034 §3.1.8.1) is built here from the
  wire bytes the answer is packed from, which is ~3x faster than ``dns.dnssec.sign`` building
  dnspython objects for each RRset; the tests check both give the same bytes. ECDSA signatures
  are deterministic (RFC 6979), so a generation signs the same RRset the same way.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dnslib
from dns.dnssecalgs import get_algorithm_cls

from geoconfig.topology import Topology
from geoconfig.validate import join
from geoconfig.zoneconfig import DnssecConfig
from geodns.answer import CNAME, NOERROR, NXDOMAIN, SOA, Answer
from geodns.dnssec import policy
from geodns.dnssec.keys import SigningKey, load_keys
from geodns.pack import label_wire, pack_rr
from geodns.wire import text_to_name
from geodns.zonedata import ZoneData, ZoneSet

CACHE_SIZE = 100_000  # cached signature sets, flushed when full
IN = 1
_RRSIG_FIXED = struct.Struct("!HBBIIIH")
_RR_FIXED = struct.Struct("!HHI")
_U16 = struct.Struct("!H")


def _labels(wire: bytes) -> list[bytes]:
    out, pos = [], 0
    while wire[pos]:
        out.append(wire[pos + 1 : pos + 1 + wire[pos]])
        pos += 1 + wire[pos]
    return out


def _dns_name(wire: bytes) -> dns.name.Name:
    return dns.name.Name([*_labels(wire), b""])


def _rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> dnslib.RR:
    return dnslib.RR(dnslib.DNSLabel(_labels(owner)), rtype, IN, ttl, dnslib.RD(rdata))


class ZoneSigner:
    """The keys and settings of one signed zone."""

    def __init__(self, origin: str, keys: list[SigningKey], cfg: DnssecConfig,
                 dnskey_ttl: int) -> None:
        self.origin = text_to_name(origin)
        self.signer = dns.name.from_text(origin)
        self.keys = keys
        self.cfg = cfg
        # dnspython's key objects (dns.dnssecalgs): the signature itself, from cryptography
        self._private = [(k.algorithm, k.tag, get_algorithm_cls(k.algorithm)(key=k.private))
                         for k in keys]
        self.dnskey_records = [_rr(self.origin, policy.DNSKEY, dnskey_ttl, k.dnskey.to_wire())
                               for k in keys]

    def sign(self, owner: bytes, rtype: int, ttl: int, rdatas: list[bytes],
             window: tuple[int, int]) -> list[dnslib.RR]:
        """One RRSIG per key over the RRset (``owner`` and ``rdatas`` in canonical form:
        lower-case, uncompressed names, as geodns/pack.py writes them)."""
        inception, expiration = window
        out = []
        for algorithm, tag, private in self._private:
            rdata = rrsig_rdata(owner, rtype, ttl, algorithm, tag, self.origin, inception,
                                expiration)
            signature = private.sign(rdata + canonical_rrset(owner, rtype, ttl, rdatas),
                                     verify=False, deterministic=True)
            out.append(_rr(owner, policy.RRSIG, ttl, rdata + signature))
        return out

    def sign_reference(self, owner: bytes, rtype: int, ttl: int, rdatas: list[bytes],
                       window: tuple[int, int]) -> list[bytes]:
        """The same RRSIG RDATA as :meth:`sign`, made by ``dns.dnssec.sign`` (for the tests)."""
        rrset = dns.rrset.RRset(_dns_name(owner), dns.rdataclass.IN,
                                dns.rdatatype.RdataType.make(rtype))
        for wire in rdatas:
            rrset.add(dns.rdata.from_wire(dns.rdataclass.IN, rtype, wire, 0, len(wire)), ttl)
        return [dns.dnssec.sign(rrset, key.private, self.signer, key.dnskey,
                                inception=window[0], expiration=window[1]).to_wire()
                for key in self.keys]


def rrsig_rdata(owner: bytes, rtype: int, ttl: int, algorithm: int, tag: int, signer: bytes,
                inception: int, expiration: int) -> bytes:
    """The RRSIG RDATA up to the signature (RFC 4034 §3.1): covered type, algorithm, labels
    (the owner's, no wildcards here), original TTL, expiration, inception, key tag, signer."""
    labels = len(_labels(owner))
    return _RRSIG_FIXED.pack(rtype, algorithm, labels, ttl, expiration & 0xFFFFFFFF,
                             inception & 0xFFFFFFFF, tag) + signer


def canonical_rrset(owner: bytes, rtype: int, ttl: int, rdatas: list[bytes]) -> bytes:
    """The RRset as signed (RFC 4034 §3.1.8.1, §6.3): each RR with the original TTL, sorted by
    RDATA as unsigned octet strings, duplicates once."""
    fixed = owner + _RR_FIXED.pack(rtype, IN, ttl)
    return b"".join(fixed + _U16.pack(len(r)) + r for r in sorted(set(rdatas)))


def load_dnssec(topology: Topology, zones: list[ZoneData]) -> Dnssec | None:
    """The signers of the topology's signed zones (their keys read now), with each zone's
    DNSKEY RRset added to its compiled ``zones`` entry; None when no zone is signed. Raises
    ConfigError for a missing or bad key: a zone configured as signed is never served
    unsigned."""
    signers: dict[bytes, ZoneSigner] = {}
    base = Path(topology.source).parent if topology.source else Path.cwd()
    compiled = {z.origin: z for z in zones}
    for i, zone in enumerate(topology.zones):
        cfg = zone.dnssec
        if cfg is None:
            continue
        key_dir = Path(cfg.key_dir)
        if not os.path.isabs(key_dir):
            key_dir = base / key_dir
        keys = load_keys(zone.origin, key_dir, join(join(join("zones", i), "dnssec"), "key_dir"))
        signer = ZoneSigner(zone.origin, keys, cfg, zone.soa.ttl)
        signers[signer.origin] = signer
        data = compiled[signer.origin]
        data.rrsets.setdefault(signer.origin, {})[policy.DNSKEY] = signer.dnskey_records
        data.existing.add(signer.origin)
    return Dnssec(signers) if signers else None


class Dnssec:
    """Every signed zone's signer and the current generation's signature cache."""

    def __init__(self, signers: dict[bytes, ZoneSigner]) -> None:
        self.signers = signers
        # the current generation: its start and its signature cache, swapped together so a
        # thread signing meanwhile stores into the old one (which nobody reads any more)
        self.generation: tuple[int | None, dict[tuple, list[dnslib.RR]]] = (None, {})
        # cache keys of the zones' own records by id(): they live as long as the zones, so
        # no other object can have their id meanwhile
        self._zone_keys: dict[int, tuple[tuple[int, ...], tuple]] = {}

    def due(self, now: int) -> bool:
        start = self.generation[0]
        return any(policy.generation_due(start, now, s.cfg) for s in self.signers.values())

    @property
    def start(self) -> int | None:
        return self.generation[0]

    def new_generation(self, now: int, zones: ZoneSet) -> None:
        """Start signing with a new validity window; static RRsets are signed now."""
        self.generation = (now, {})
        self.presign(zones)

    def presign(self, zones: ZoneSet) -> None:
        for zone in zones.zones:
            if zone.origin not in self.signers:
                continue
            for rrsets in zone.rrsets.values():
                for rrs in rrsets.values():
                    self._zone_keys[id(rrs[0])] = (tuple(map(id, rrs)), self._key(rrs))
                    self._signatures(zones, rrs)
            soa = [zone.negative_soa]
            self._zone_keys[id(soa[0])] = ((id(soa[0]),), self._key(soa))
            self._signatures(zones, [zone.negative_soa])

    def signed_zone(self, zones: ZoneSet, name: bytes) -> ZoneSigner | None:
        zone = zones.find(name)
        return None if zone is None else self.signers.get(zone.origin)

    def sign_answer(self, ans: Answer, qname: bytes, qtype: int, zones: ZoneSet) -> Answer:
        """The answer with signatures, and its denial proof when it is negative."""
        if ans.rcode not in (NOERROR, NXDOMAIN):
            return ans
        out = Answer(ans.rcode, ans.authoritative, self._with_signatures(zones, ans.answer),
                     self._with_signatures(zones, ans.authority),
                     self._with_signatures(zones, ans.additional), ans.location_dependent,
                     ans.ede)
        if not any(rr.rtype == SOA for rr in ans.authority):
            return out
        final = _final_name(qname, ans.answer)
        zone = zones.find(final)
        signer = None if zone is None else self.signers.get(zone.origin)
        if zone is None or signer is None:
            return out
        nxdomain = ans.rcode == NXDOMAIN
        present = policy.name_types(zone.rrsets.get(final, {}), final in zone.geo)
        wire = policy.nsec_rdata(policy.successor(final),
                                 policy.denial_types(nxdomain, present, qtype))
        ttl = zone.negative_ttl
        out.authority.append(_rr(final, policy.NSEC, ttl, wire))
        if nxdomain:  # one name per query: never cached
            out.authority += signer.sign(final, policy.NSEC, ttl, [wire], self._window(signer))
            out.rcode = NOERROR
        else:
            out.authority += self._cached(signer, final, policy.NSEC, ttl, (wire,))
        return out

    def _window(self, signer: ZoneSigner, start: int | None = None) -> tuple[int, int]:
        start = self.generation[0] if start is None else start
        assert start is not None, "new_generation() first"
        return policy.validity(start, signer.cfg)

    def _with_signatures(self, zones: ZoneSet, records: list[dnslib.RR]) -> list[dnslib.RR]:
        out: list[dnslib.RR] = []
        for rrs in _rrsets(records):
            out += rrs
            out += self._signatures(zones, rrs)
        return out

    @staticmethod
    def _key(rrs: list[dnslib.RR]) -> tuple[bytes, int, int, tuple[bytes, ...]]:
        first = rrs[0]
        return (label_wire(first.rname), first.rtype, first.ttl,
                tuple(b"".join(pack_rr(rr)[2]) for rr in rrs))

    def _signatures(self, zones: ZoneSet, rrs: list[dnslib.RR]) -> list[dnslib.RR]:
        known = self._zone_keys.get(id(rrs[0]))
        same = known is not None and known[0] == tuple(map(id, rrs))
        key = known[1] if same and known is not None else self._key(rrs)
        owner = key[0]
        signer = self.signed_zone(zones, owner)
        if signer is None:
            return []
        return self._cached(signer, *key)

    def _cached(self, signer: ZoneSigner, owner: bytes, rtype: int, ttl: int,
                rdatas: tuple[bytes, ...]) -> list[dnslib.RR]:
        key = (owner, rtype, ttl, rdatas)
        start, cache = self.generation
        hit = cache.get(key)
        if hit is None:
            hit = signer.sign(owner, rtype, ttl, list(rdatas), self._window(signer, start))
            if len(cache) >= CACHE_SIZE:
                cache.clear()  # bounded; this generation's signatures are made again
            cache[key] = hit
        return hit


def _final_name(qname: bytes, answer: list[dnslib.RR]) -> bytes:
    """The name the answer's CNAME chain from ``qname`` ends at."""
    name = qname
    for rr in answer:
        if rr.rtype == CNAME and label_wire(rr.rname) == name:
            name = label_wire(rr.rdata.label)
    return name


def _rrsets(records: list[dnslib.RR]) -> list[list[dnslib.RR]]:
    """Records grouped by (owner, type, class), in order of first appearance."""
    groups: dict[tuple[bytes, int, int], list[dnslib.RR]] = {}
    for rr in records:
        groups.setdefault((label_wire(rr.rname), rr.rtype, rr.rclass), []).append(rr)
    return list(groups.values())
