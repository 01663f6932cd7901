"""geodns: the authoritative GeoDNS server.

Entry points: ``geodns.main.run_dns`` (``geoedge dns``: load the topology, listen on UDP and
TCP, probe the edges, reload on change) and ``geodns.explain.run_explain`` (``geoedge
explain``). ``engine.Engine`` answers one query from the wire bytes; ``server`` runs the
sockets (with the optional C fast path ``_fastudp``), ``health`` probes the edges.

Rules: a role. It may import ``geoconfig`` (the topology), ``geodata`` (locate and rank), the
standard library and third-party packages (``dnslib``, ``aiohttp`` for the probes); never
``edge``, ``origin`` or ``geoedge`` (tests/test_layering.py). The engine is synchronous and
never blocks; an answer is a pure function of the query, the topology and the health state.
"""
