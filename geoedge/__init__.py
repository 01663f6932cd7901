"""geoedge: the top shell, the ``geoedge`` command and the tools around the roles.

Entry point: ``geoedge.cli.main`` (the ``geoedge`` console script), which dispatches to each
role's entry point (``geodns.main``, ``geodns.explain``, ``edge.main``, ``origin.main``) and to
the tools: ``geoedge.client`` (``fetch``, ``purge``), ``geoedge.demo`` (``demo``) and
``geoedge.deploy`` (``python -m geoedge.deploy.compose``).

Rules: nothing below imports ``geoedge`` (configuration lives in ``geoconfig``). Only ``cli``
imports the roles, lazily, per command; the tools reach the roles over the network or as child
processes and may import only ``geoconfig``, ``geodata`` and their own subpackage
(tests/test_layering.py).
"""
