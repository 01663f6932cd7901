"""Location: what a GeoIP database says about one client address.

Rules:
- Only the few fields routing needs are kept; the raw database record is not.
- ``found`` is False when the database has no record for the address (private, documentation,
  unallocated space); every other field is then None except ``prefix_len``/``network``.
- ``prefix_len`` and ``network`` describe the database network that contains the address
  (found or not), in the address's own family: an IPv4 address gives an IPv4 network with a
  prefix of 0-32, never the 96+n of the IPv6 tree it is stored in.
- ``latitude``/``longitude`` are both set or both None (Country databases never have them;
  some City records carry a country but no location).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network


@dataclass(frozen=True, slots=True)
class Location:
    """The database's answer for one address."""

    country: str | None  # ISO 3166-1 alpha-2, e.g. "GB"
    continent: str | None  # continent code, e.g. "EU"
    latitude: float | None
    longitude: float | None
    prefix_len: int
    network: IPv4Network | IPv6Network
    found: bool

