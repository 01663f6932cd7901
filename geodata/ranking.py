"""Ranking: order the regions for one client, then pick the first healthy one.

Rules (pure functions: no clock, no I/O; health is passed in):
- ``rank_regions`` returns every configured region exactly once, best first.
- Client with coordinates: all regions by great-circle distance from the client; ties keep
  config order. method "distance"; ``distances_km`` holds each region's distance.
- Client found but without coordinates (a Country database, or a City record that has only a
  country): the regions whose ``countries`` contain the client's country (config order), then
  those whose ``continents`` contain its continent, then the default region, then all the rest
  by distance from the first region of that list, so failover goes to the next-nearest.
  method "country", "continent" or "default": whichever put the first region first.
- No location, or not found (private, documentation, unallocated space): the default region,
  then the rest by distance from it. method "default".
- Without client coordinates ``distances_km`` is all None (distances are not from the client).
- ``select_region``: the first region in the order that is up; when none is up, the first one,
  with ``failed_open=True`` (fail-open like gdnsd's meta plugins: a possibly-down answer beats
  no answer). With a Mapping, a region missing from it counts as down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import asin, cos, radians, sin, sqrt

from geodata.location import Location
from geodata.regions import Region

EARTH_RADIUS_KM = 6371.0088  # mean Earth radius (IUGG)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in km between two points given in degrees."""
    phi1, phi2 = radians(lat1), radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = radians(lon2 - lon1) / 2
    a = sin(half_dphi) ** 2 + cos(phi1) * cos(phi2) * sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(a)))


@dataclass(frozen=True, slots=True)
class Ranking:
    """All region names, best first; distances aligned with ``order`` (None if not by distance)."""

    order: tuple[str, ...]
    distances_km: tuple[float | None, ...]
    method: str  # "distance", "country", "continent" or "default"


@dataclass(frozen=True, slots=True)
class Selection:
    region: str
    failed_open: bool  # True when no region was up and the first in order was chosen anyway


def rank_regions(location: Location | None, regions: Sequence[Region], default: str) -> Ranking:
    """Order ``regions`` for a client at ``location`` (see the rules at the top of the file)."""
    default_region = _check(regions, default)
    if location is None or not location.found:
        return _fallback([default_region], regions, "default")
    if location.latitude is not None and location.longitude is not None:
        lat, lon = location.latitude, location.longitude
        distances = [great_circle_km(lat, lon, r.latitude, r.longitude) for r in regions]
        best = sorted(range(len(regions)), key=lambda i: (distances[i], i))
        return Ranking(
            order=tuple(regions[i].name for i in best),
            distances_km=tuple(distances[i] for i in best),
            method="distance",
        )
    by_country = [r for r in regions if location.country in r.countries]
    by_continent = [r for r in regions if location.continent in r.continents]
    method = "country" if by_country else "continent" if by_continent else "default"
    return _fallback([*by_country, *by_continent, default_region], regions, method)


def _fallback(head: list[Region], regions: Sequence[Region], method: str) -> Ranking:
    """``head`` without repeats, then the other regions by distance from the first of it."""
    chosen: dict[str, Region] = {}
    for region in head:
        chosen.setdefault(region.name, region)
    anchor = head[0]
    rest = sorted(
        (r for r in regions if r.name not in chosen),
        key=lambda r: great_circle_km(anchor.latitude, anchor.longitude, r.latitude, r.longitude),
    )  # sorted() is stable: equal distances keep config order
    order = (*chosen, *(r.name for r in rest))
    return Ranking(order=order, distances_km=(None,) * len(order), method=method)


def _check(regions: Sequence[Region], default: str) -> Region:
    """The default region; ValueError if the region list is empty, repeats, or lacks it."""
    if not regions:
        raise ValueError("no regions configured")
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ValueError(f"region names repeat: {names}")
    for region in regions:
        if region.name == default:
            return region
    raise ValueError(f"default region {default!r} is not one of {names}")


def select_region(
    order: Sequence[str], is_up: Callable[[str], bool] | Mapping[str, bool]
) -> Selection:
    """The first region of ``order`` that is up, else the first one, failed open."""
    if not order:
        raise ValueError("no regions to select from")
    if isinstance(is_up, Mapping):
        health = is_up

        def up(name: str) -> bool:
            return bool(health.get(name, False))

    else:
        up = is_up
    for name in order:
        if up(name):
            return Selection(region=name, failed_open=False)
    return Selection(region=order[0], failed_open=True)
