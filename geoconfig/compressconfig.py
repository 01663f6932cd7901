"""``[edge.compression]``: which stored responses the edge compresses, and how hard.

Shape (every key optional; the defaults are those of ``CompressionSettings``)::

    [edge.compression]
    enabled = true
    codings = ["br", "gzip"]          # produced, in the edge's order of preference
    types = ["text/*", "application/json", ...]   # media types; "type/*" matches a family
    min_bytes = 256                   # smaller bodies are stored as they are
    max_bytes = 8388608               # larger ones too (compressing blocks the event loop)
    gzip_level = 6                    # 1-9, zlib's
    brotli_quality = 5                # 0-11, Brotli's (done once per fill, not per hit)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from geoconfig.validate import ConfigError, check_keys, get, join, number_in, str_list

CODINGS = ("br", "gzip")
# what nginx's gzip_types, Caddy's encode and the CDNs compress by default: text, and the
# text-like application types (scripts, JSON, XML, SVG, fonts that are not already compressed)
DEFAULT_TYPES = (
    "text/*", "application/javascript", "application/x-javascript", "application/json",
    "application/ld+json", "application/manifest+json", "application/xml",
    "application/xhtml+xml", "application/rss+xml", "application/atom+xml",
    "application/wasm", "image/svg+xml", "image/x-icon", "font/ttf", "font/otf",
    "application/vnd.ms-fontobject",
)


@dataclass(frozen=True, slots=True)
class CompressionSettings:
    enabled: bool = True
    codings: tuple[str, ...] = CODINGS
    types: tuple[str, ...] = DEFAULT_TYPES
    min_bytes: int = 256
    max_bytes: int = 8 * 1024 * 1024
    gzip_level: int = 6
    brotli_quality: int = 5


def parse_compression(table: Any, path: str = "edge.compression") -> CompressionSettings:
    t = check_keys(table, path, set(CompressionSettings.__dataclass_fields__))
    d = CompressionSettings()
    codings = str_list(t, path, "codings") if "codings" in t else d.codings
    for i, coding in enumerate(codings):
        if coding not in CODINGS:
            raise ConfigError(join(join(path, "codings"), i),
                              f"unknown coding {coding!r} (one of {', '.join(CODINGS)})")
    types = str_list(t, path, "types") if "types" in t else d.types
    for i, media in enumerate(types):
        kind, slash, sub = media.partition("/")
        if not slash or not kind or not sub or kind == "*" or " " in media or ";" in media:
            raise ConfigError(join(join(path, "types"), i),
                              f'not a media type ("type/subtype" or "type/*"): {media!r}')
    ints = {}
    for key, low, high in (("min_bytes", 0, 2**40), ("max_bytes", 1, 2**40),
                           ("gzip_level", 1, 9), ("brotli_quality", 0, 11)):
        ints[key] = int(number_in(get(t, path, key, int, getattr(d, key)), join(path, key),
                                  low, high))
    if ints["min_bytes"] > ints["max_bytes"]:
        raise ConfigError(join(path, "min_bytes"), "must not exceed max_bytes")
    return CompressionSettings(get(t, path, "enabled", bool, d.enabled),
                               tuple(dict.fromkeys(codings)),
                               tuple(m.lower() for m in types), **ints)
