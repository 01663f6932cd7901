"""origin: the origin web server that the edges fetch from.

Entry point: ``origin.main.run_origin`` (``geoedge origin``), serving ``origin.app.create_app``:
the files of ``[origin] root`` with validators, conditionals and ranges (``content``,
``conditional``, ``ranges``), per-path headers from ``[origin] rules`` (``headers``), and the
demo endpoints (``api``).

Rules: a role. It may import ``geoconfig`` (its settings), the standard library and third-party
packages (``aiohttp``); never ``geodns``, ``edge`` or ``geoedge`` (tests/test_layering.py).
"""
