"""The layout of one cached object on disk: checksummed, so a torn or altered file is never served.

Rules:

- A file is ``MAGIC`` (b"GD1\\n") | a 16-byte BLAKE2b digest of the payload | the payload, which
  is the shared tier's entry encoding (``edge.tier.entrycodec``: magic, JSON length, the JSON
  document, the body). One format for Redis and disk, never pickle.
- ``pack`` builds the bytes; ``unpack`` checks magic, length and digest before decoding, and
  raises ``ValueError`` saying what is wrong (the caller deletes the file and treats it as a
  miss). ``peek`` reads only the header (what the loader needs to index a file without reading
  its body) and checks that the file is as long as the header says; the digest is checked when
  the object is served, which reads the whole file anyway.
- File names come from hashes of the primary key and of the variant key, so a request finds
  its files without an index: ``<root>/<k[:2]>/<k>/<v>.obj`` (``k``, ``v``: hex SHA-256,
  truncated to 32 digits). Writers build a file under ``<root>/tmp`` and rename it into place,
  so a crash leaves either the old file, the new one or a stray temporary file (removed at
  start), never a half-written object under a real name.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from edge.tier.entrycodec import MAGIC as ENTRY_MAGIC
from edge.tier.entrycodec import MAX_JSON_BYTES, DecodedEntry, decode_entry

__all__ = ["HEADER_BYTES", "MAGIC", "Peeked", "key_dir", "object_path", "pack", "peek", "unpack"]

MAGIC = b"GD1\n"
_DIGEST = 16
HEADER_BYTES = len(MAGIC) + _DIGEST
_LENGTH = struct.Struct(">I")
_ENTRY_PREFIX = len(ENTRY_MAGIC) + _LENGTH.size
SUFFIX = ".obj"


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def key_dir(root: Path, key: str) -> Path:
    """The directory holding every variant of one primary key."""
    k = _hex(key)
    return root / k[:2] / k


def object_path(root: Path, key: str, variant: str) -> Path:
    return key_dir(root, key) / (_hex(variant) + SUFFIX)


def _digest(payload: bytes | memoryview) -> bytes:
    return hashlib.blake2b(payload, digest_size=_DIGEST).digest()


def pack(payload: bytes) -> bytes:
    """The file bytes for an encoded entry (``entrycodec.encode_entry``)."""
    return b"".join((MAGIC, _digest(payload), payload))


def unpack(data: bytes) -> DecodedEntry:
    """The entry a file holds; ValueError if the file is not exactly what ``pack`` wrote."""
    if len(data) < HEADER_BYTES:
        raise ValueError(f"disk object: truncated ({len(data)} bytes)")
    if data[:len(MAGIC)] != MAGIC:
        raise ValueError("disk object: bad magic")
    view = memoryview(data)[HEADER_BYTES:]
    if _digest(view) != data[len(MAGIC):HEADER_BYTES]:
        raise ValueError("disk object: checksum mismatch (torn or altered file)")
    return decode_entry(bytes(view))


@dataclass(frozen=True, slots=True)
class Peeked:
    """What the loader indexes: the header of a file, its body not read."""

    key: str
    variant: str
    vary: tuple[str, ...]
    tags: frozenset[str]
    keep_until: float
    soft: bool
    size: int  # bytes of the whole file


def peek(head: bytes, file_size: int) -> Peeked:
    """Index data from the first bytes of a file (at least HEADER_BYTES + the entry's JSON);
    ValueError when malformed or when the file is shorter or longer than its header says."""
    if len(head) < HEADER_BYTES + _ENTRY_PREFIX or head[:len(MAGIC)] != MAGIC:
        raise ValueError("disk object: bad header")
    start = HEADER_BYTES
    if head[start:start + len(ENTRY_MAGIC)] != ENTRY_MAGIC:
        raise ValueError("disk object: bad entry magic")
    (n,) = _LENGTH.unpack_from(head, start + len(ENTRY_MAGIC))
    if n > MAX_JSON_BYTES or len(head) < start + _ENTRY_PREFIX + n:
        raise ValueError("disk object: header shorter than its JSON length")
    try:
        doc = json.loads(head[start + _ENTRY_PREFIX:start + _ENTRY_PREFIX + n])
        length = doc["length"]
        peeked = Peeked(str(doc["key"]), str(doc["variant"]), tuple(doc["vary"]),
                        frozenset(doc["tags"]), float(doc["keep_until"]), bool(doc["soft"]),
                        file_size)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"disk object: bad JSON header: {exc}") from exc
    if type(length) is not int or start + _ENTRY_PREFIX + n + length != file_size:
        raise ValueError(f"disk object: {file_size} bytes, the header says otherwise (truncated?)")
    return peeked


def head_bytes_needed(head: bytes) -> int:
    """How many leading bytes ``peek`` needs, from the first HEADER_BYTES + 8 of a file."""
    if len(head) < HEADER_BYTES + _ENTRY_PREFIX:
        return HEADER_BYTES + _ENTRY_PREFIX
    (n,) = _LENGTH.unpack_from(head, HEADER_BYTES + len(ENTRY_MAGIC))
    return HEADER_BYTES + _ENTRY_PREFIX + min(n, MAX_JSON_BYTES)
