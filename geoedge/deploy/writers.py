"""The TOML and YAML writers of the deployment files (stdlib only, deterministic output).

Rules:

* Only what ``compose.py`` writes is supported: TOML for a topology-shaped document (top-level
  tables and arrays of tables, inline tables below) and block-style YAML for mappings, with
  flow style for lists of scalars. Anything else raises ``TypeError``.
* Keys are bare when the format allows it, else quoted; strings are always quoted (a JSON
  string is both a TOML basic string and a YAML double-quoted scalar), so no YAML word such as
  ``no`` or ``on`` changes type. Values keep the order of the input mapping.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    return json.dumps(text).replace("\x7f", "\\u007f")  # JSON escapes are TOML escapes


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # inf, -inf, nan
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table_body(table: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in table.items():
        if _is_table_array(value):  # one inline table a line
            lines.append(f"{_toml_key(key)} = [")
            lines.extend(f"  {_toml_value(v)}," for v in value)
            lines.append("]")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return lines


def dump_toml(data: dict[str, Any], header: Sequence[str] = ()) -> str:
    """TOML for a topology-shaped document: top-level tables and arrays of tables, inline below."""
    lines = [f"# {h}" for h in header]
    scalars = {k: v for k, v in data.items()
               if not isinstance(v, dict) and not _is_table_array(v)}
    lines.extend(_toml_table_body(scalars))
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{_toml_key(key)}]", *_toml_table_body(value)]
        elif _is_table_array(value):
            for item in value:
                lines += ["", f"[[{_toml_key(key)}]]", *_toml_table_body(item)]
    return "\n".join(lines) + "\n"


_YAML_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _yaml_key(key: str) -> str:
    bare = _YAML_BARE_KEY.fullmatch(key) and key.lower() not in _YAML_WORDS
    return key if bare else json.dumps(key)


def _yaml_flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, list) and not any(isinstance(v, dict | list) for v in value):
        return "[" + ", ".join(_yaml_flow(v) for v in value) + "]"
    if value == {}:
        return "{}"
    raise TypeError(f"cannot write {value!r} to YAML in flow style")


def _yaml_block(mapping: dict[str, Any], indent: int) -> list[str]:
    pad = " " * indent
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{_yaml_key(key)}:")
            lines.extend(_yaml_block(value, indent + 2))
        elif _is_table_array(value):
            lines.append(f"{pad}{_yaml_key(key)}:")
            for item in value:
                item_lines = _yaml_block(item, indent + 4)
                item_lines[0] = f"{pad}  - {item_lines[0].lstrip()}"
                lines.extend(item_lines)
        else:
            lines.append(f"{pad}{_yaml_key(key)}: {_yaml_flow(value)}")
    return lines


def dump_yaml(data: dict[str, Any], header: Sequence[str] = ()) -> str:
    """Block-style YAML for mappings, flow style for lists of scalars; strings double-quoted."""
    return "\n".join([*(f"# {h}" for h in header), *_yaml_block(data, 0)]) + "\n"
