"""TLS to origins: one client ``ssl.SSLContext`` per ``https`` origin, built at start.

Rules:

* Verification is on by default: the peer's chain against the system store, or only against
  ``tls_ca_file`` when one is configured, and its name against ``tls_server_name`` (default:
  the origin's ``host``), which is also the SNI sent (no SNI for an IP address, as RFC 6066
  §3 requires; the certificate must then name the address).
* ``tls_cert_file`` / ``tls_key_file``: a client certificate for origins that ask for one.
* ``tls_verify = false`` turns verification off; that is logged as a warning at start,
  once per origin. TLS 1.2 is the lowest version offered.
* A file that cannot be read, or a pair that does not match, is a ``ConfigError`` naming the
  key: the edge does not start.
"""

from __future__ import annotations

import logging
import ssl

from geoconfig.cdnconfig import OriginServer
from geoconfig.validate import ConfigError

log = logging.getLogger("geoedge.edge.upstream")

__all__ = ["client_context", "server_name"]


def server_name(origin: OriginServer) -> str:
    """The name verified and sent as SNI (Python's ssl sends no SNI for an IP literal)."""
    return origin.tls_server_name or origin.host


def client_context(origin: OriginServer, where: str) -> ssl.SSLContext | None:
    """The origin's TLS context (None for plain http); ``where`` names its config table."""
    if origin.scheme != "https":
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if origin.tls_ca_file is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=origin.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}.tls_ca_file",
                              f"cannot load {origin.tls_ca_file}: {exc}") from None
    if origin.tls_cert_file is not None:
        try:
            ctx.load_cert_chain(origin.tls_cert_file, origin.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}.tls_cert_file",
                              f"cannot load {origin.tls_cert_file} with key "
                              f"{origin.tls_key_file or '(in the same file)'}: {exc}") from None
    if not origin.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("origin %s (%s:%d): TLS certificate verification is OFF (tls_verify = "
                    "false): anyone on the path can impersonate it", origin.name, origin.host,
                    origin.port)
    return ctx
