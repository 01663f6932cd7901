"""Start and stop a DNS process's metrics listener and query log (``[dns] metrics_listen``,
``[dns.querylog]``; see geodns/metrics.py and geodns/querylog.py).

Both need the C counters of geodns/_obs.h (``geodns._fastudp``): without the extension the
query log is refused at start-up (a clear error) and the metrics have no query counters.
Both are fixed at start-up, like the listen addresses: a reload does not change them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from geoconfig.dnsobs import ObsSettings
from geoconfig.validate import ConfigError, format_host_port
from geodns.querylog import QueryLog

log = logging.getLogger("geoedge.dns")


def _fastudp() -> Any:
    try:
        from geodns import _fastudp
    except ImportError:
        return None
    return _fastudp


def _version() -> bytes:
    try:
        return f"geoedge {metadata.version('geoedge')}".encode()
    except metadata.PackageNotFoundError:
        return b"geoedge"


@dataclass
class Observability:
    """The C counters (``obs``, handed to the DnsServer), the query log and the metrics."""

    settings: ObsSettings
    obs: Any = None
    querylog: QueryLog | None = None
    metrics: Any = None  # geodns.metrics.DnsMetrics
    metrics_url: str = ""
    _http: Any = None

    @classmethod
    def create(cls, settings: ObsSettings, identity: str) -> Observability:
        """The counters and the opened query log; raises ConfigError (no C extension for the
        query log) or OSError (the log file cannot be opened)."""
        out = cls(settings)
        fast = _fastudp()
        qs = settings.querylog
        if qs.path and fast is None:
            raise ConfigError("dns.querylog.path", "the query log needs the C extension "
                              "geodns._fastudp, which is not built (no C compiler at install?)")
        if qs.path:
            out.querylog = QueryLog(qs)
            out.querylog.open()
            out.obs = fast.obs_new(log=out.querylog.c_settings(identity.encode(), _version()))
            out.querylog.start(out.obs, fast.obs_take)
        elif settings.metrics_listen is not None and fast is not None:
            out.obs = fast.obs_new()
        return out

    def serve_metrics(self, server: Any) -> None:
        """Start the metrics listener for ``server`` (a started DnsServer); OSError."""
        if self.settings.metrics_listen is None:
            return
        from geodns.metrics import DnsMetrics, serve_metrics  # prometheus-client

        fast = _fastudp()
        read, bounds = (fast.obs_read, fast.obs_bounds()) if fast is not None else (None, ())
        self.metrics = DnsMetrics(server, time.time(), read, bounds, self.querylog)
        host, port = self.settings.metrics_listen
        self._http, port = serve_metrics(self.metrics, host, port)
        self.metrics_url = f"http://{format_host_port(host, port)}/metrics"
        log.info("serving metrics on %s", self.metrics_url)
        if fast is None:
            log.warning("metrics: the C extension geodns._fastudp is not built: no query "
                        "counters")

    def health_changed(self, health: Any) -> None:
        if self.metrics is not None:
            self.metrics.health_changed(health, time.time())

    def reloaded(self, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.reloaded(ok, time.time())

    def reopen_log(self) -> None:
        if self.querylog is not None:
            self.querylog.reopen()

    def stop(self) -> None:
        """After the server has stopped: the last records written, the listener closed."""
        if self.querylog is not None:
            self.querylog.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


__all__ = ["Observability"]
