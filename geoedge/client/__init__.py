"""The client tools: ``geoedge fetch`` (with its stub resolver) and ``geoedge purge``.

Entry points: ``fetch.run_fetch`` and ``purge.run_purge``, called by ``geoedge.cli``. They talk
to GeoDNS and the edges over the network only, like any other client: they may import
``geoconfig`` (to name the edges of a topology), the standard library and third-party packages,
never a role package (``geodns``, ``edge``, ``origin``) nor the rest of ``geoedge``.
"""
