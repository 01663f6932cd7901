"""Regions: a name, a point on the globe, and the fallback country/continent mappings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Region:
    """A serving region. ``countries`` (ISO 3166-1 alpha-2) and ``continents`` (GeoNames codes:
    AF AN AS EU NA OC SA) are used only when a client has no coordinates."""

    name: str
    latitude: float
    longitude: float
    countries: frozenset[str] = field(default_factory=frozenset)
    continents: frozenset[str] = field(default_factory=frozenset)
