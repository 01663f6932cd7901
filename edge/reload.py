"""Applying a changed topology file to a running edge: on SIGHUP, when the file (or one of its
certificates) changes, and the periodic TLS ticket-key rotation.

- The whole file is loaded and validated first; a bad one is logged with the key named
  (``ConfigError``) and the running configuration keeps serving. Certificates are loaded
  next (``CertError``: which file and why), again before anything is swapped.
- What applies live: sites, their hosts, origins and knobs, the default site, certificates.
  Process-wide settings (cache size, client limits, listeners) need a restart; a change to
  them is logged and otherwise ignored.
- Nothing is dropped: established connections keep their TLS context and requests in flight
  keep their site's pool (edge/sites.py retires old pools later); the cache is the same one.
- File changes are seen by polling (mtime, size, inode) every ``interval`` seconds, no
  inotify dependency.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edge.sites import SiteRouter
from edge.tls import CertError, CertSpec, Contexts, TlsAcceptor
from geoconfig.cdnconfig import CdnSettings
from geoconfig.topology import Topology, load_topology
from geoconfig.validate import ConfigError

log = logging.getLogger("geoedge.edge.reload")


def cert_spec(cdn: CdnSettings) -> CertSpec | None:
    """The certificates a configuration names, or None when it names none."""
    pairs = tuple((s.hosts, ((s.tls.cert, s.tls.key),) + (
                      ((s.tls.alt_cert, s.tls.alt_key),) if s.tls.alt_cert is not None else ()))
                  for s in cdn.sites if s.tls.cert is not None and s.tls.key is not None)
    if cdn.tls.cert is not None and cdn.tls.key is not None:
        default = ((cdn.tls.cert, cdn.tls.key),)
    elif pairs:
        default = pairs[0][1]
    else:
        return None
    return CertSpec(default, pairs)  # type: ignore[arg-type]


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class Reloader:
    def __init__(self, path: str, topology: Topology, router: SiteRouter,
                 acceptor: TlsAcceptor | None, alpn: tuple[str, ...],
                 load: Callable[[str], Topology] = load_topology,
                 applied: Callable[[], None] = lambda: None) -> None:
        """``applied`` is called after each reload that took effect (the process entry
        settles its heap then: edge/heap.py)."""
        self.path = path
        self.topology = topology
        self.router = router
        self.acceptor = acceptor
        self.alpn = alpn
        self.load = load
        self.applied = applied
        self.reloads = 0  # applied
        self.rejected = 0
        self._stamps = self._watched()
        self._lock = asyncio.Lock()

    def _files(self) -> list[Path]:
        files = [Path(self.path)]
        spec = cert_spec(self.topology.cdn)
        if spec is not None:
            files += spec.files
        return files

    def _watched(self) -> dict[Path, tuple[int, int, int] | None]:
        return {f: _stamp(f) for f in self._files()}

    async def reload(self, why: str) -> bool:
        """Load, validate and apply the file; False (and the old config kept) on an error."""
        async with self._lock:
            self._stamps = self._watched()
            try:
                topology = self.load(self.path)
                contexts = self._contexts(topology.cdn)
            except (ConfigError, CertError, OSError) as exc:
                self.rejected += 1
                log.error("reload (%s) rejected, the running configuration stays: %s", why, exc)
                return False
            changed = [k for k in ("cache_max_bytes", "max_connections", "admin_listen")
                       if getattr(topology.cdn.edge, k) != getattr(self.topology.cdn.edge, k)]
            if changed or topology.cdn.tls.listen != self.topology.cdn.tls.listen:
                log.warning("reload: process-wide settings changed (%s): they apply at the "
                            "next restart", ", ".join(changed) or "edge.tls_listen")
            try:
                await self.router.apply(topology.cdn)
            except OSError as exc:
                self.rejected += 1
                log.error("reload (%s) rejected: %s", why, exc)
                return False
            if contexts is not None and self.acceptor is not None:
                self.acceptor.contexts = contexts
            self.topology = replace(self.topology, cdn=topology.cdn)
            self._stamps = self._watched()
            self.reloads += 1
            log.warning("reloaded %s (%s): %d sites", self.path, why, len(topology.cdn.sites))
            self.applied()
            return True

    def _contexts(self, cdn: CdnSettings) -> Contexts | None:
        if self.acceptor is None:
            return None
        spec = cert_spec(cdn)
        if spec is None:
            raise CertError("the HTTPS listener needs a certificate: set edge.tls_cert and "
                            "edge.tls_key or a site's tls.cert and tls.key")
        return Contexts(spec, self.alpn, cdn.tls.session_tickets)

    async def rotate_tickets(self) -> None:
        """Fresh contexts (so fresh ticket keys) from the same files."""
        if self.acceptor is None:
            return
        try:
            self.acceptor.contexts = self._contexts(self.topology.cdn) or self.acceptor.contexts
        except CertError as exc:
            log.error("ticket key rotation skipped, certificates unusable: %s", exc)

    async def watch(self, interval: float = 1.0) -> None:
        rotate_every = self.topology.cdn.tls.ticket_rotate
        loop = asyncio.get_running_loop()
        next_rotation = loop.time() + rotate_every
        while True:
            await asyncio.sleep(interval)
            if self._watched() != self._stamps:
                await self.reload("file changed")
            if loop.time() >= next_rotation:
                next_rotation = loop.time() + rotate_every
                await self.rotate_tickets()
