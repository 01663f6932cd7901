"""The demo: every process of a topology on one machine, supervised.

Entry point: ``main.run_demo`` (``geoedge demo``). ``services`` plans the processes (argv, ready
probes) from the topology, ``supervisor`` starts, watches, restarts and stops them (each through
``python -m geoedge.demo._child`` so it dies with the demo), ``probes`` checks readiness. The
roles run as child processes (``python -m geoedge.cli ...``), never imported: this package may
import ``geoconfig``, the standard library and third-party packages only.
"""
