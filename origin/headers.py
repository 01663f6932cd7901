"""Response metadata for static content: caching headers from the config rules, Content-Type.

Pure: functions of their arguments.

Rules:

* ``rule_headers``: the first ``ContentRule`` whose glob matches the URL path wins
  (``fnmatch.fnmatchcase``: case-sensitive everywhere, ``*`` also matches ``/``). The path
  matched is the URL path of the file served -- for a directory request that is the path of
  its ``index.html`` (``/`` matches as ``/index.html``), so ``/*.html`` covers index pages.
  The rule's non-empty ``cache_control``, ``cdn_cache_control`` and ``surrogate_key`` become
  Cache-Control, CDN-Cache-Control (RFC 9213) and Surrogate-Key. No match: none of the three
  is sent (an edge may then apply heuristic freshness from Last-Modified).
* ``content_type``: from the file name with the standard library's built-in table (not the
  machine's /etc/mime.types, so every host answers alike); unknown names, and files with an
  encoding suffix such as ``.gz`` (which must not be served as Content-Encoding), are
  ``application/octet-stream``. Text types get ``; charset=utf-8``.
"""

from __future__ import annotations

import fnmatch
import mimetypes
from collections.abc import Iterable

from geoconfig.cdnconfig import ContentRule

__all__ = ["TEXT_TYPES", "content_type", "find_rule", "new_type_table", "rule_headers"]

TEXT_TYPES = frozenset({"application/json", "application/javascript", "application/xml",
                        "image/svg+xml"})


def find_rule(rules: Iterable[ContentRule], url_path: str) -> ContentRule | None:
    for rule in rules:
        if fnmatch.fnmatchcase(url_path, rule.path):
            return rule
    return None


def rule_headers(rules: Iterable[ContentRule], url_path: str) -> dict[str, str]:
    rule = find_rule(rules, url_path)
    if rule is None:
        return {}
    pairs = (("Cache-Control", rule.cache_control),
             ("CDN-Cache-Control", rule.cdn_cache_control),
             ("Surrogate-Key", rule.surrogate_key))
    return {name: value for name, value in pairs if value}


def new_type_table() -> mimetypes.MimeTypes:
    """A table with only the standard library's defaults (no system files)."""
    return mimetypes.MimeTypes()


def content_type(table: mimetypes.MimeTypes, name: str) -> str:
    kind, encoding = table.guess_type(name, strict=False)
    if kind is None or encoding is not None:
        return "application/octet-stream"
    if kind.startswith("text/") or kind in TEXT_TYPES:
        return f"{kind}; charset=utf-8"
    return kind
