"""Signing decisions as pure functions of their inputs (the clock passed in as ``now``).

Rules:

- Signatures are made in generations: a generation starting at ``start`` signs with inception
  ``start - inception_skew`` (validators with a clock behind ours accept them) and expiration
  ``start + signature_lifetime``. Every signature of a generation has the same window, so the
  cached answers (the engine's and the C fast path's) can all be dropped at once.
- A new generation is due when less than ``refresh`` seconds of the current one are left, or
  when the clock went back past its inception; the engine then drops every cached answer.
- Only answers to queries with the DO bit, for names in a signed zone, are signed (RFC 4035
  §3.1); DO=0 answers stay as they are unsigned (NXDOMAIN included).
- Denial of existence is compact (RFC 9824, "black lies"): one NSEC whose owner is the name
  asked for and whose next name is its immediate successor (``\\000.name``), so it covers no
  other name and the zone cannot be walked. NXDOMAIN becomes NOERROR with the NSEC's bitmap
  RRSIG, NSEC and NXNAME (128); NODATA's bitmap holds the types the name has (A and AAAA for
  a geo name), never the type asked for, plus RRSIG and NSEC. The NSEC's TTL is the negative
  TTL (RFC 9824 §3, RFC 2308 §5).
"""

from __future__ import annotations

from collections.abc import Iterable

from geoconfig.zoneconfig import DnssecConfig

A, AAAA, CNAME, RRSIG, NSEC, DNSKEY, NXNAME = 1, 28, 5, 46, 47, 48, 128


def validity(start: int, cfg: DnssecConfig) -> tuple[int, int]:
    """(inception, expiration) of the signatures of the generation that began at ``start``."""
    return start - cfg.inception_skew, start + cfg.signature_lifetime


def generation_due(start: int | None, now: int, cfg: DnssecConfig) -> bool:
    """Whether a new generation must begin at ``now``."""
    if start is None:
        return True
    inception, expiration = validity(start, cfg)
    return now >= expiration - cfg.refresh or now < inception


def signs(do: bool, zone_signed: bool) -> bool:
    """Whether an answer carries signatures and proofs."""
    return do and zone_signed


def successor(name: bytes) -> bytes:
    """The name that immediately follows ``name`` in canonical order: ``\\000.name``
    (RFC 4034 §6.1; RFC 9824 §2), a wire-format name."""
    return b"\x01\x00" + name


def denial_types(nxdomain: bool, present: Iterable[int], qtype: int) -> tuple[int, ...]:
    """The NSEC type bitmap (sorted) proving an NXDOMAIN or a NODATA for ``qtype``."""
    if nxdomain:
        return (RRSIG, NSEC, NXNAME)
    return tuple(sorted((set(present) - {qtype}) | {RRSIG, NSEC}))


def nsec_rdata(next_name: bytes, types: Iterable[int]) -> bytes:
    """NSEC RDATA (RFC 4034 §4.1): the next name (wire, uncompressed) and the type bitmap, one
    window block per 256 types present, each as long as its highest type needs."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        bits = windows.setdefault(t >> 8, bytearray())
        low = t & 0xFF
        if len(bits) <= low >> 3:
            bits.extend(bytes((low >> 3) + 1 - len(bits)))
        bits[low >> 3] |= 0x80 >> (low & 7)
    return next_name + b"".join(bytes((w, len(b))) + bytes(b) for w, b in sorted(windows.items()))


def name_types(static: Iterable[int], geo: bool) -> set[int]:
    """The types a name has: its static records' and, for a geo name, A and AAAA (their
    addresses depend on the client, but the name always has both types)."""
    out = set(static)
    if geo:
        out |= {A, AAAA}
    return out
