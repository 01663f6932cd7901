"""geoconfig: the topology file and the configuration types every role reads.

Entry point: ``geoconfig.topology.load_topology(path)`` (or ``parse_topology(doc)``), which
validates the whole file and returns a frozen ``Topology``; the parts live in ``zoneconfig``
(zones, records, geo names), ``cdnconfig`` (``[edge]``, ``[[origins]]``, ``[origin]``, a
region's ``redis``) and ``validate`` (the checks and ``ConfigError``). ``httpdate`` is the one
HTTP-date parser and formatter of the project.

Rules: it sits just above ``geodata`` and below the roles. It may import ``geodata``, the
standard library and third-party packages (``dnslib`` for record values); never ``geodns``,
``edge``, ``origin`` or ``geoedge`` (tests/test_layering.py checks it). Pure parsing: no
sockets, nothing read or configured at import time; a bad file raises ``ConfigError`` naming
the key.
"""
