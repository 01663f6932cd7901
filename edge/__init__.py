"""edge: an edge node, an HTTP/1.1 caching reverse proxy in front of the origins.

Entry point: ``edge.main.run_edge`` (``geoedge edge``), which builds an ``edge.proxy.EdgeApp``
(the one request loop), its ``edge.upstream.OriginPool`` and, when the region has Redis, an
``edge.tier.region.RegionTier``, and serves them with ``edge.httpserver``.

Rules: a role. It may import ``geoconfig``, ``geodata``, the standard library and third-party
packages; never ``geodns``, ``origin`` or ``geoedge`` (tests/test_layering.py). Inside it:

- ``edge.policy`` holds the caching rules as pure functions (see its docstring);
- ``edge.tier`` is the shared Redis tier, the only place that imports redis or aiocache;
- the proxy builds the admin API (``edge.admin``) and the tier, never the other way round:
  neither imports ``edge.proxy``; ``Admin`` is given exactly what it reports on.
"""
