"""Small helpers for validating TOML tables into typed values.

Every error names the full key path (``regions[1].latitude``) and the problem, so an operator
can find the line to fix. Nothing here reads files; the callers pass parsed TOML in.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem: ``key`` is the dotted path, ``problem`` what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "a table",
}


def type_name(t: type) -> str:
    return _TYPE_NAMES.get(t, t.__name__)


def check_keys(table: Any, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    """Reject anything that is not a table, unknown keys and missing required keys."""
    if not isinstance(table, Mapping):
        raise ConfigError(path, f"must be a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(join(path, key), f"unknown key (known keys here: {known})")
    for key in sorted(required):
        if key not in table:
            raise ConfigError(join(path, key), "required key is missing")
    return dict(table)


def get(table: Mapping[str, Any], path: str, key: str, kind: type[T], default: Any = ...) -> T:
    """Return ``table[key]`` checked to be of ``kind`` (ints are accepted where floats are)."""
    full = join(path, key)
    if key not in table:
        if default is ...:
            raise ConfigError(full, "required key is missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)  # type: ignore[return-value]
        except OverflowError:
            raise ConfigError(full, "number too large") from None
    if kind is int and isinstance(value, bool):
        raise ConfigError(full, f"must be {type_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(full, f"must be {type_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"  # ':g' would print 2**32-1 as 4.29497e+09


def number_in(value: float, path: str, low: float, high: float) -> float:
    if not low <= value <= high:
        raise ConfigError(path, f"must be between {_num(low)} and {_num(high)}, got {value!r}")
    return value


def positive(value: float, path: str) -> float:
    if not (value > 0 and math.isfinite(value)):  # also rejects nan and inf
        raise ConfigError(path, f"must be a finite number greater than 0, got {value!r}")
    return value


def str_list(table: Mapping[str, Any], path: str, key: str) -> tuple[str, ...]:
    values = get(table, path, key, list, [])
    for i, item in enumerate(values):
        if not isinstance(item, str):
            raise ConfigError(join(join(path, key), i), f"must be a string, got {item!r}")
    return tuple(values)


def ip_address(value: str, path: str, version: int | None = None) -> str:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(path, f"not an IP address: {value!r}") from None
    if version is not None and addr.version != version:
        raise ConfigError(path, f"must be an IPv{version} address, got {value!r}")
    return str(addr)


def format_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, or ``[V6]:PORT`` for an IPv6 address (the inverse of ``host_port``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_port(value: str, path: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(path, f"must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (port_text.isascii() and port_text.isdigit()):  # int() would allow ' 53', '5_3'
        raise ConfigError(path, f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(path, f"port must be 0..65535, got {port}")
    if ":" in host or host.replace(".", "").isdigit():
        ip_address(host, path)
    return host, port
