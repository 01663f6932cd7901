"""Deployment: ``docker-compose.yml`` and ``deploy/topology.toml`` generated from the topology.

Entry point: ``python -m geoedge.deploy.compose [--check]`` (``compose.main``); ``writers`` holds
its TOML and YAML emitters. It may import ``geoconfig``, the standard library and third-party
packages only, never a role package.
"""
