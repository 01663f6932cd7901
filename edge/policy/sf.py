"""Minimal RFC 8941 (Structured Field Values) support: parse a Dictionary, serialise items.

Rules:

* Targeted cache-control fields are Dictionaries (RFC 9213 §2.1) and Cache-Status is a List
  (RFC 9211 §2); this module implements exactly what those need.
* ``parse_dictionary`` follows the parsing algorithm of RFC 8941 §4.2 (§4.2.2 Dictionary,
  §4.2.3 Item, §4.2.3.2 Parameters, §4.2.4-§4.2.8 bare items, §4.2.1.2 Inner List). On ANY
  syntax error it raises ``ValueError`` -- RFC 8941 §4.2: the whole field MUST be ignored, and
  the caller (cachecontrol.py) turns that into "field absent" per RFC 9213 §2.1.
* A repeated key overwrites the earlier value (RFC 8941 §4.2.2 step 2.4).
* Tokens parse to ``Token`` (a ``str`` subclass) so they can be told apart from Strings.
* Serialisation: ``serialize_string`` (§4.1.6; only printable ASCII may be represented, others
  raise), ``serialize_token`` (§4.1.7), ``serialize_key`` (§4.1.1.3), integers (§4.1.4).
"""

from __future__ import annotations

import base64
import string

__all__ = [
    "Token",
    "is_key",
    "is_token",
    "parse_dictionary",
    "serialize_bare_item",
    "serialize_key",
    "serialize_string",
    "serialize_token",
]

_LCALPHA = frozenset(string.ascii_lowercase)
_KEY_FIRST = _LCALPHA | {"*"}
_KEY_CHARS = _LCALPHA | frozenset(string.digits) | frozenset("_-.*")
_TCHAR = frozenset("!#$%&'*+-.^_`|~") | frozenset(string.ascii_letters + string.digits)
_TOKEN_CHARS = _TCHAR | frozenset(":/")
_TOKEN_FIRST = frozenset(string.ascii_letters) | {"*"}
_B64 = frozenset(string.ascii_letters + string.digits + "+/=")
MAX_INTEGER = 999_999_999_999_999


class Token(str):
    """An sf-token (as opposed to an sf-string)."""

    __slots__ = ()


def is_key(value: str) -> bool:
    return bool(value) and value[0] in _KEY_FIRST and all(c in _KEY_CHARS for c in value)


def is_token(value: str) -> bool:
    return bool(value) and value[0] in _TOKEN_FIRST and all(c in _TOKEN_CHARS for c in value)


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def skip(self, chars: str) -> None:
        while self.i < len(self.s) and self.s[self.i] in chars:
            self.i += 1

    def key(self) -> str:
        if self.peek() not in _KEY_FIRST or not self.peek():
            raise ValueError("invalid key")
        start = self.i
        while self.peek() and self.peek() in _KEY_CHARS:
            self.i += 1
        return self.s[start : self.i]

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {}
        while self.peek() == ";":
            self.i += 1
            self.skip(" ")
            k = self.key()
            v: object = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare()
            out[k] = v
        return out

    def item_or_list(self) -> tuple[object, dict[str, object]]:
        if self.peek() == "(":
            self.i += 1
            items: list[tuple[object, dict[str, object]]] = []
            while True:
                self.skip(" ")
                if not self.peek():
                    raise ValueError("unterminated inner list")
                if self.peek() == ")":
                    self.i += 1
                    return items, self.params()
                items.append((self.bare(), self.params()))
                if self.peek() not in (" ", ")"):
                    raise ValueError("bad inner list")
        return self.bare(), self.params()

    def bare(self) -> object:
        c = self.peek()
        if c == "-" or (c.isdigit() and c.isascii()):
            return self.number()
        if c == '"':
            return self.string()
        if c and c in _TOKEN_FIRST:
            start = self.i
            while self.peek() and self.peek() in _TOKEN_CHARS:
                self.i += 1
            return Token(self.s[start : self.i])
        if c == ":":
            end = self.s.find(":", self.i + 1)
            if end < 0 or any(ch not in _B64 for ch in self.s[self.i + 1 : end]):
                raise ValueError("bad byte sequence")
            raw = self.s[self.i + 1 : end]
            self.i = end + 1
            return base64.b64decode(raw + "=" * (-len(raw) % 4))
        if c == "?":
            flag = self.s[self.i + 1 : self.i + 2]
            if flag not in ("0", "1"):
                raise ValueError("bad boolean")
            self.i += 2
            return flag == "1"
        raise ValueError("bad bare item")

    def number(self) -> int | float:
        sign = 1
        if self.peek() == "-":
            sign, self.i = -1, self.i + 1
        start = self.i
        while (self.peek().isdigit() and self.peek().isascii()) or self.peek() == ".":
            self.i += 1
        text = self.s[start : self.i]
        if not text or not text[0].isdigit():
            raise ValueError("bad number")
        if "." not in text:
            if len(text) > 15:
                raise ValueError("integer too long")
            return sign * int(text)
        whole, _, frac = text.partition(".")
        if "." in frac or len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise ValueError("bad decimal")
        return sign * float(text)

    def string(self) -> str:
        self.i += 1
        out: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                nxt = self.s[self.i : self.i + 1]
                if nxt not in ('"', "\\"):
                    raise ValueError("bad escape")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise ValueError("bad string char")
            else:
                out.append(c)
        raise ValueError("unterminated string")


def parse_dictionary(text: str) -> dict[str, tuple[object, dict[str, object]]]:
    """Parse an sf-dictionary (RFC 8941 §4.2.2); raise ValueError on any error."""
    p = _Parser(text)
    p.skip(" ")
    out: dict[str, tuple[object, dict[str, object]]] = {}
    while p.peek():
        k = p.key()
        if p.peek() == "=":
            p.i += 1
            out[k] = p.item_or_list()
        else:
            out[k] = (True, p.params())
        p.skip(" \t")
        if not p.peek():
            break
        if p.peek() != ",":
            raise ValueError("expected comma")
        p.i += 1
        p.skip(" \t")
        if not p.peek():
            raise ValueError("trailing comma")
    return out


def serialize_string(value: str) -> str:
    if any(not " " <= c <= "~" for c in value):
        raise ValueError("sf-string must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_token(value: str) -> str:
    if not is_token(value):
        raise ValueError(f"not an sf-token: {value!r}")
    return value


def serialize_key(value: str) -> str:
    if not is_key(value):
        raise ValueError(f"not an sf-key: {value!r}")
    return value


def serialize_bare_item(value: object) -> str:
    """Serialise bool/int/Token/str (RFC 8941 §4.1.3.1); str becomes a String."""
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ValueError("sf-integer out of range")
        return str(value)
    if isinstance(value, Token):
        return serialize_token(value)
    if isinstance(value, str):
        return serialize_string(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
