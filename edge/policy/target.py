"""The request's URL as the cache keys it and the origin receives it (RFC 9112 §3.2, RFC 3986).

One parse decides both: the primary cache key is built from the same normalised parts that are
forwarded, so no request can make the edge store the origin's answer for one URL under another.

Rules (``parse_target`` returns a ``Target`` or a ``BadTarget`` with the status to answer):

* Host (RFC 9110 §7.2, RFC 3986 §3.2.2): ``host [":" port]`` where host is a DNS-style
  reg-name (letters, digits, ``-``, ``_``, dots between non-empty labels, at most 253
  characters, labels at most 63), an IPv4 address, or an IPv6 literal in brackets; port is
  1-65535 digits (an empty port means the default). Anything else -- ``/``, ``?``, ``#``,
  ``@``, ``\\``, spaces, percent-encoding, empty labels -- is 400, as nginx answers it.
  Normalised: lower-case, one trailing dot removed, the scheme's default port dropped.
* origin-form (``/path?query``): the Host header names the authority. A request without Host
  (HTTP/1.0) uses ``default_host``.
* absolute-form (``http://host[:port]/path?query``): its authority replaces Host (§3.2.2); the
  scheme must be http or https, userinfo is refused (RFC 9110 §4.2.4), the authority is
  validated as above.
* asterisk-form (``*``) only with OPTIONS; authority-form (``host:port``) only with CONNECT,
  which the edge does not proxy: 501 for CONNECT, 400 for other shapes.
* A fragment (``#``), a control character, a space or a backslash is 400; other printable
  bytes that clients send raw although RFC 3986 does not allow them (``[]{}|^"<>``, bytes
  above 0x7F) are percent-encoded, in the key and in what is forwarded alike.
* Path and query normalised as RFC 3986 §6.2.2 allows: percent-encodings get upper-case hex,
  percent-encoded unreserved characters are decoded, dot segments are removed (§5.2.4). An
  empty query (``/a?``) stays distinct from none, since origins may tell them apart.
* The primary key is ``scheme://authority/path[?query]`` of the normalised parts; the origin
  receives exactly that path and query and that authority as Host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["DEFAULT_PORTS", "BadTarget", "Target", "normalise_authority", "parse_target",
           "url_key"]

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_HOST = 253

# A path and query made only of unreserved, sub-delims, ':', '@', '/', '?' and no '%':
# nothing to normalise unless it has dot segments.
_SIMPLE = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?")
_PATH_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SIMPLE_HOST = re.compile(r"[a-z0-9][a-z0-9.-]*")
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     "-._~!$&'()*+,;=:@/?%")
_REFUSED = frozenset("#\\ ")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    authority: str  # normalised host[:port], as forwarded in Host
    path_query: str  # normalised origin-form target, as forwarded

    @property
    def key(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path_query}"

    @property
    def path(self) -> str:
        return self.path_query.split("?", 1)[0]


@dataclass(frozen=True, slots=True)
class BadTarget:
    status: int  # 400, or 501 for CONNECT
    reason: str


def normalise_authority(authority: str, scheme: str = "http") -> str | None:
    """``host[:port]`` lower-cased, trailing dot and default port removed; None if invalid."""
    if _SIMPLE_HOST.fullmatch(authority) and ".." not in authority and len(authority) <= MAX_HOST:
        host = authority[:-1] if authority.endswith(".") else authority  # the common case
        if host and all(_LABEL.fullmatch(label) for label in host.split(".")):
            return host
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[: end + 1], authority[end + 1:]
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        host = f"[{address.compressed}]"
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = authority.partition(":")
        host = host.lower()
        if host.endswith("."):
            host = host[:-1]
        if not host or len(host) > MAX_HOST or not all(
                _LABEL.fullmatch(label) for label in host.split(".")):
            return None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            return None
        port = int(port_text)
        if not 0 < port < 65536:
            return None
        if port != DEFAULT_PORTS.get(scheme):
            return f"{host}:{port}"
    return host


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _pct(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _encode_unsafe(text: str) -> str | None:
    r"""Percent-encode the printable bytes that clients send raw although RFC 3986 does not
    allow them (``[]{}|^"<>`` and bytes above 0x7F, as received); None for a byte no request
    target may hold: control characters, space, ``#`` and a backslash (which some origins read
    as ``/``, so that ``\..\`` would escape the keyed path)."""
    out = []
    for ch in text:
        if ch in _ALLOWED:
            out.append(ch)
        elif ch in _REFUSED or ord(ch) < 0x21 or ord(ch) == 0x7F or ord(ch) > 0xFF:
            return None
        else:
            out.append(f"%{ord(ch):02X}")
    return "".join(out)


def _normalise_path_query(text: str) -> str | None:
    if _SIMPLE.fullmatch(text) and "/." not in text.split("?", 1)[0]:
        return text
    if not text.startswith("/"):
        return None
    if not _PATH_QUERY.fullmatch(text):
        encoded = _encode_unsafe(text)
        if encoded is None:
            return None
        text = encoded
    if _BAD_PCT.search(text):
        return None
    path, sep, query = text.partition("?")
    path = _remove_dot_segments(_PCT.sub(_pct, path))
    return path + sep + _PCT.sub(_pct, query)


def parse_target(method: str, raw: str, host_header: str | None, scheme: str = "http",
                 default_host: str = "localhost") -> Target | BadTarget:
    """Validate and normalise a request's target and Host (see the module's rules)."""
    if method == "CONNECT":
        return BadTarget(501, "connect-not-supported")
    if raw == "*":
        if method != "OPTIONS":
            return BadTarget(400, "asterisk-form")
        path_query = "*"
        authority_text = host_header
    elif raw.startswith("/"):
        path_query = raw
        authority_text = host_header
    else:
        absolute = _split_absolute(raw)
        if absolute is None:
            return BadTarget(400, "bad-target")
        scheme, authority_text, path_query = absolute
    if authority_text is None or authority_text == "":
        if host_header is not None:  # Host present but empty
            return BadTarget(400, "bad-host")
        authority = default_host
    else:
        checked = normalise_authority(authority_text, scheme)
        if checked is None:
            return BadTarget(400, "bad-host")
        authority = checked
    if path_query != "*":
        normalised = _normalise_path_query(path_query)
        if normalised is None:
            return BadTarget(400, "bad-target")
        path_query = normalised
    return Target(scheme, authority, path_query)


def _split_absolute(raw: str) -> tuple[str, str, str] | None:
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        return None
    cut = len(rest)
    for ch in "/?":
        at = rest.find(ch)
        if 0 <= at < cut:
            cut = at
    authority, path_query = rest[:cut], rest[cut:]
    if not authority or "@" in authority:
        return None
    if path_query.startswith("?") or not path_query:
        path_query = "/" + path_query
    return scheme, authority, path_query


def url_key(uri: str, host: str | None = None, scheme: str = "http") -> str | None:
    """The primary key of an absolute URI (or of a path on ``host``), fragment dropped; None
    when it is not a valid http(s) target. Purges and invalidations key with this."""
    uri = uri.split("#", 1)[0]
    parsed = parse_target("GET", uri, host, scheme)
    return None if isinstance(parsed, BadTarget) else parsed.key
