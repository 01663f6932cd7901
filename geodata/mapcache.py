"""The compiled RegionMap on disk, keyed by the database's bytes and the region config.

Rules:
- The key is SHA-256 over a format version, the database file's bytes, the default region and
  every region's name, coordinates, countries and continents (in config order): any change to
  what the map depends on gives a new file name, so a cached file is never stale.
- A file is written to a temporary name in the same directory and renamed into place, so a
  reader sees either no file or a whole one; a file that does not parse is compiled again.
- ``load_or_compile`` is the only entry point that does I/O; ``dumps``/``loads`` are pure.
- Directory: ``geoip.map_cache_dir`` in the topology; empty means ``$XDG_CACHE_HOME/geoedge``
  or ``~/.cache/geoedge``. An unwritable directory only costs the cache (logged), not the map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path

from geodata.regionmap import MmdbTree, RegionMap, Table, compile_map
from geodata.regions import Region

FORMAT = b"geoedge-regionmap-2"  # 2: the deep IPv6 entries
_LEN = struct.Struct("!I")
log = logging.getLogger("geoedge.geodata")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoedge"


def cache_key(db_path: str | Path, regions: Sequence[Region], default: str) -> str:
    digest = hashlib.sha256(FORMAT)
    with open(db_path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    config = [default] + [[r.name, r.latitude, r.longitude, sorted(r.countries),
                           sorted(r.continents)] for r in regions]
    digest.update(json.dumps(config).encode())
    return digest.hexdigest()


def dumps(rmap: RegionMap) -> bytes:
    head = json.dumps({"orders": rmap.orders, "v4": len(rmap.v4.starts),
                       "v6": len(rmap.v6.starts), "deep": rmap.deep}).encode()
    parts = [FORMAT, _LEN.pack(len(head)), head]
    for table in (rmap.v4, rmap.v6):
        parts += [table.starts.tobytes(), table.plens, table.vals.tobytes()]
    return b"".join(parts)


def loads(data: bytes) -> RegionMap:
    """The map in ``data``; ValueError when it is not a whole map of this format."""
    if not data.startswith(FORMAT):
        raise ValueError("not a region map of this format")
    pos = len(FORMAT)
    (n,) = _LEN.unpack_from(data, pos)
    pos += 4
    head = json.loads(data[pos : pos + n])
    pos += n
    tables = []
    for family, code in (("v4", "L"), ("v6", "Q")):
        count = head[family]
        starts, vals = array(code), array("H")
        size = count * starts.itemsize
        starts.frombytes(data[pos : pos + size])
        plens = data[pos + size : pos + size + count]
        vals.frombytes(data[pos + size + count : pos + size + count * 3])
        pos += size + count * 3
        if len(plens) != count or len(vals) != count or not count:
            raise ValueError("truncated region map")
        tables.append(Table(starts, bytes(plens), vals))
    if pos != len(data):
        raise ValueError("bytes after the region map")
    orders = tuple(tuple(o) for o in head["orders"])
    deep = tuple((int(start), tuple(int(v) for v in vals)) for start, vals in head["deep"])
    return RegionMap(orders, tables[0], tables[1], deep)


def load_or_compile(db_path: str | Path, regions: Sequence[Region], default: str,
                    cache_dir: str | Path | None = None) -> RegionMap:
    """The map from the cache, or compiled (and then cached)."""
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    path = directory / f"regionmap-{cache_key(db_path, regions, default)}.bin"
    try:
        return loads(path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, struct.error) as exc:
        log.warning("region map cache %s unusable (%s); compiling again", path, exc)
    log.info("compiling the region map of %s (not cached yet)", db_path)
    rmap = compile_map(MmdbTree(db_path), regions, default)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".regionmap-", delete=False) as fh:
            fh.write(dumps(rmap))
        os.replace(fh.name, path)
    except OSError as exc:
        log.warning("cannot cache the region map in %s: %s", directory, exc)
    return rmap
