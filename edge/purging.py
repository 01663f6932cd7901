"""Wiring of an edge to its region's purge log (edge/tier/purgelog.py); used by start_edge.

- The log's entries from other edges are applied to the in-process store through the admin
  API's purge (so they are counted and recorded in the fill guard, edge/policy/tiering.py).
- The follower's position is the fill guard's ``cursor`` (where a fill started in the log).
- In sync moves the proxy's ``trust_until`` on (memory hits served unvalidated only then).
- The region's edges (by name) are the peers whose acknowledgements a purge waits for; an
  edge of several workers is confirmed when each of its workers has acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.proxy import EdgeApp
from edge.tier.purgelog import PurgeLog
from edge.tier.region import RegionTier, shared_settings
from geoconfig.topology import Edge


def attach_purge_log(app: EdgeApp, tier: RegionTier, region_edges: tuple[Edge, ...],
                     clock: Callable[[], float],
                     worker: tuple[int, int] | None = None) -> PurgeLog:
    """``worker``: (index, count) of this process when the edge runs several."""
    config = tier.config

    def apply(kind: str, value: str, soft: bool) -> None:
        tier.shared.counts["purges_received"] += 1  # from the other edges, through the log
        app.admin.purge(kind, value, soft, notify=False)

    def on_sync(until: float) -> None:
        app.trust_until = until

    def on_cursor(cursor: str) -> None:
        app.purges.cursor = cursor

    purge_log = PurgeLog(shared_settings(config), app.name, clock, apply, on_sync, on_cursor,
                         worker)
    tier.log = purge_log
    tier.peers = tuple(e.name for e in region_edges)
    app.trust_until = 0.0  # until the log has been read once
    app.admin.region_purge = tier.region_purge
    return purge_log


__all__ = ["attach_purge_log"]
