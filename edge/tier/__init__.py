"""edge.tier: the region's shared cache tier (Redis) behind the edge's in-process store.

Entry point: ``edge.tier.region.RegionTier`` (built and started by ``edge.main.start_edge``):
lookups that rebuild an in-memory entry, background fills, purges, cross-node fill leases.
Below it, ``protocol.SharedTier`` speaks the tier's Redis protocol (every call timed, counted
and behind a circuit breaker, so Redis trouble is a miss, never a failed request);
``conn`` holds the connection adapters (standalone Redis through aiocache, Redis Cluster through
redis-py); ``keys`` the pure parts (settings, key layout, Lua scripts); ``entrycodec`` the bytes
of a stored entry (never pickle).

Rules: only ``conn`` imports redis or aiocache. The tier may import ``edge.policy``,
``edge.store``, ``edge.breaker`` and ``geoconfig``; never ``edge.proxy`` or ``edge.admin``
(tests/test_layering.py).
"""
