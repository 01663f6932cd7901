"""geodata: client address -> Location -> ranked regions -> selected region.

Entry points (all re-exported here): ``GeoReader`` (a MaxMind database; the embedded GeoLite2
one by default), ``rank_regions`` and ``select_region``.

Rules: pure logic, no sockets; the only I/O is opening a database in ``GeoReader(...)``.
Nothing is opened or configured at import time. The bottom layer: it imports only the standard
library and ``maxminddb``, never another package of the project (tests/test_layering.py).
"""

from geodata.location import Location
from geodata.ranking import (
    EARTH_RADIUS_KM,
    Ranking,
    Selection,
    great_circle_km,
    rank_regions,
    select_region,
)
from geodata.reader import GeoDatabaseError, GeoReader, embedded_database_path
from geodata.regions import Region

GEOLITE2_CREDIT = (
    "This product includes GeoLite2 data created by MaxMind, available from "
    "https://www.maxmind.com."
)

__all__ = [
    "EARTH_RADIUS_KM",
    "GEOLITE2_CREDIT",
    "GeoDatabaseError",
    "GeoReader",
    "Location",
    "Ranking",
    "Region",
    "Selection",
    "embedded_database_path",
    "great_circle_km",
    "rank_regions",
    "select_region",
]
