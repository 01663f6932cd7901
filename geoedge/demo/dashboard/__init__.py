"""The demo's live web dashboard: a world map of the regions and edges, live GeoDNS answers,
traffic per edge and origin, "where would this client go", and stop/start buttons."""

from geoedge.demo.dashboard.collector import Collector
from geoedge.demo.dashboard.server import Dashboard

__all__ = ["Collector", "Dashboard"]
