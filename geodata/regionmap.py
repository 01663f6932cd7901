"""RegionMap: the database and the regions compiled into networks -> ordered region list.

Rules (pure logic; the only I/O is reading the .mmdb file in ``MmdbTree``):

- The database's search tree is walked once, left to right, so its leaves (networks with a
  record, and empty ones) come out in address order and partition the address space. Each
  leaf gets the index of its region order in ``orders`` (``rank_regions`` of the record, with
  the continent/country overrides; an empty leaf ranks as not found: the default region first).
  A record is decoded once, however many networks share it.
- Adjacent networks are merged "buddy" style: two aligned halves of a prefix with the same value
  become the prefix, repeatedly. So every entry is the widest aligned prefix around its
  addresses whose addresses all share the value, and no entry is ever too wide.
- ``merged(key)`` re-merges a map by a coarser key of the order index (e.g. "the first healthy
  region for each name"); an entry then keeps one representative order of its block, which
  gives the same answer as any other order in it under that key.
- IPv4 is kept as 32-bit starts; IPv6 as the upper 64 bits (ECS scopes beyond /64 are not
  needed). A /64 holding deeper networks gets their value when they all have the same one;
  else it is ``SLOW`` (the caller asks the database itself), and the order indices of its
  networks are kept in ``deep``, so that ``merged`` can still give it one value when they all
  have the same key (e.g. the same nearest region): such a /64 then merges with its
  neighbours instead of cutting every prefix around it short. Any IPv6 subtree that is an
  alias of the IPv4 tree (::/96 inside ::/64, ::ffff:0:0/96, 2002::/16) is SLOW with no
  ``deep`` entry, as is a /64 with more than ``DEEP_MAX`` networks. An IPv4-only database gives
  one SLOW IPv6 entry.
- Lookup: ``lookup(family, address)`` is one binary search in the sorted starts, giving
  (order index or SLOW, prefix length of the entry).
"""

from __future__ import annotations

import mmap
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path

import maxminddb

from geodata.location import Location
from geodata.ranking import rank_regions
from geodata.reader import GeoDatabaseError, record_fields
from geodata.regions import Region

SLOW = 0xFFFF  # value: the map does not know; look the address up in the database
V6_BITS = 64  # IPv6 entries hold the upper 64 bits
DEEP_MAX = 256  # networks under one /64 walked to find their values
_NOWHERE = Location(None, None, None, None, 0, IPv4Network("0.0.0.0/0"), False)


@dataclass(frozen=True, slots=True)
class Table:
    """One family's entries in address order: starts, prefix lengths and values."""

    starts: array  # "L" (IPv4, 32-bit) or "Q" (IPv6, upper 64 bits)
    plens: bytes
    vals: array  # "H": index into RegionMap.orders, or SLOW

    def lookup(self, key: int) -> tuple[int, int]:
        i = bisect_right(self.starts, key) - 1
        return self.vals[i], self.plens[i]


@dataclass(frozen=True, slots=True)
class RegionMap:
    orders: tuple[tuple[str, ...], ...]
    v4: Table
    v6: Table
    # SLOW IPv6 entries (start, as in v6.starts) -> the order indices of the networks in them
    deep: tuple[tuple[int, tuple[int, ...]], ...] = ()

    def lookup(self, family: int, address: bytes) -> tuple[int, int]:
        """(order index or SLOW, scope) for a full-length address of ``family`` (1 or 2)."""
        if family == 1:
            return self.v4.lookup(int.from_bytes(address[:4], "big"))
        return self.v6.lookup(int.from_bytes(address[:8], "big"))

    def merged(self, key: Callable[[int], object]) -> RegionMap:
        """The map merged by ``key(order index)`` (SLOW entries stay SLOW)."""
        return RegionMap(self.orders, _remerge(self.v4, 32, key, {}),
                         _remerge(self.v6, V6_BITS, key, dict(self.deep)))

    def __len__(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)


class _Merger:
    """Buddy merge of aligned blocks pushed in address order."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.starts = array("L" if bits == 32 else "Q")
        self.plens = bytearray()
        self.vals = array("H")

    def push(self, start: int, plen: int, val: int) -> None:
        starts, plens, vals, bits = self.starts, self.plens, self.vals, self.bits
        while plen and vals and vals[-1] == val and plens[-1] == plen:
            size = 1 << (bits - plen)
            top = starts[-1]
            if top + size != start or top & size:
                break
            starts.pop()
            plens.pop()
            vals.pop()
            start, plen = top, plen - 1
        starts.append(start)
        plens.append(plen)
        vals.append(val)

    def table(self) -> Table:
        return Table(self.starts, bytes(self.plens), self.vals)


def _remerge(table: Table, bits: int, key: Callable[[int], object],
             deep: dict[int, tuple[int, ...]]) -> Table:
    rep: dict[object, int] = {}
    out = _Merger(bits)
    for start, plen, val in zip(table.starts, table.plens, table.vals, strict=True):
        if val != SLOW:
            val = rep.setdefault(key(val), val)
        elif start in deep:
            vals = deep[start]
            keys = {key(v) for v in vals}
            if len(keys) == 1:
                val = rep.setdefault(keys.pop(), vals[0])
        out.push(start, plen, val)
    return out.table()


class MmdbTree:
    """The search tree and data section of a .mmdb file, read without the C extension."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
            meta = self.reader.metadata()
            with open(path, "rb") as fh:
                self.buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoDatabaseError(f"{path}: cannot read the search tree: {exc}") from exc
        if meta.record_size not in (24, 28, 32):
            raise GeoDatabaseError(f"{path}: unsupported record size {meta.record_size}")
        self.node_count: int = meta.node_count
        self.record_size: int = meta.record_size
        self.ip_version: int = meta.ip_version

    def children(self, node: int) -> tuple[int, int]:
        nb = self.record_size // 4
        v = int.from_bytes(self.buf[node * nb : node * nb + nb], "big")
        if self.record_size == 28:
            return (v >> 32) | ((v >> 28) & 0xF) << 24, v & 0xFFFFFFF
        rs = self.record_size
        return v >> rs, v & ((1 << rs) - 1)

    def ipv4_root(self) -> tuple[int, int]:
        """(node, depth) where the IPv4 space starts: ::/96 in an IPv6 tree."""
        node, depth = 0, 0
        if self.ip_version == 6:
            while depth < 96 and node < self.node_count:
                node, depth = self.children(node)[0], depth + 1
        return node, depth

    def leaves(self, root: int, bits: int, cap: int, alias: int) -> Iterator[tuple[int, int, int]]:
        """(start, prefix, node-or-pointer) for every leaf under ``root`` in address order;
        starts have ``cap`` bits; a subtree rooted at ``alias`` comes out as one leaf with value
        -1, one deeper than ``cap`` as one leaf with its node (below ``node_count``)."""
        node_count = self.node_count
        stack = [(root, 0, 0)]
        pop, push, children = stack.pop, stack.append, self.children
        while stack:
            node, net, depth = pop()
            if node >= node_count or depth == cap or (node == alias and depth):
                yield net, depth, -1 if node == alias else node  # < node_count: deeper
                continue
            left, right = children(node)
            depth += 1
            push((right, net | 1 << (cap - depth), depth))
            push((left, net, depth))
        del bits


def compile_map(tree: MmdbTree, regions: Sequence[Region], default: str) -> RegionMap:
    """The full-order map of ``tree`` for ``regions`` (see the rules at the top)."""
    orders: dict[tuple[str, ...], int] = {}
    by_pointer: dict[int, int] = {}
    by_place: dict[tuple, int] = {}
    get = tree.reader.get

    def value(pointer: int, address: IPv4Address | IPv6Address) -> int:
        hit = by_pointer.get(pointer)
        if hit is None:
            if pointer < 0:
                hit = SLOW
            else:
                fields = record_fields(get(address)) if pointer > tree.node_count else None
                hit = by_place.get(fields)  # type: ignore[arg-type]
                if hit is None:
                    order = rank_regions(_location(fields), regions, default).order
                    hit = by_place[fields] = orders.setdefault(order, len(orders))  # type: ignore[index]
            by_pointer[pointer] = hit
        return hit

    v4_root, v4_depth = tree.ipv4_root()
    m4 = _Merger(32)
    if v4_depth < 96 and tree.ip_version == 6:  # the IPv4 space is inside one leaf
        m4.push(0, 0, value(v4_root, IPv4Address(0)))
    else:
        for start, plen, pointer in tree.leaves(v4_root, 32, 32, -2):
            pointer = -1 if 0 <= pointer < tree.node_count else pointer  # not a leaf: SLOW
            m4.push(start, plen, value(pointer, IPv4Address(start)))
    m6 = _Merger(V6_BITS)
    deep: dict[int, tuple[int, ...]] = {}
    if tree.ip_version == 6:
        for start, plen, pointer in tree.leaves(0, 128, V6_BITS, v4_root):
            if 0 <= pointer < tree.node_count:  # networks deeper than /64
                vals = _deep_values(tree, pointer, start, v4_root, value)
                val = vals[0] if vals is not None and len(vals) == 1 else SLOW
                if vals is not None and len(vals) > 1:
                    deep[start] = vals
            else:
                val = value(pointer, IPv6Address(start << 64))
            m6.push(start, plen, val)
    else:
        m6.push(0, 0, SLOW)
    value(tree.node_count, IPv4Address(0))  # "not found" always has its order in the table
    v6 = m6.table()
    return RegionMap(tuple(orders), m4.table(), v6, _deep_entries(v6, deep))


def _deep_values(tree: MmdbTree, node: int, start: int, alias: int,
                 value: Callable[[int, IPv6Address], int]) -> tuple[int, ...] | None:
    """The distinct values of the networks under a /64's ``node``; None when one of them is
    an alias of the IPv4 tree, SLOW, or there are more than DEEP_MAX."""
    out: dict[int, None] = {}
    stack = [(node, 0, 0)]
    seen = 0
    while stack:
        n, net, depth = stack.pop()
        if n == alias:
            return None
        if n >= tree.node_count:
            seen += 1
            val = value(n, IPv6Address((start << 64) | (net << (64 - depth))))
            if val == SLOW or seen > DEEP_MAX:
                return None
            out[val] = None
            continue
        if depth == 64:
            return None
        left, right = tree.children(n)
        stack.append((right, net << 1 | 1, depth + 1))
        stack.append((left, net << 1, depth + 1))
    return tuple(out)


def _deep_entries(v6: Table, deep: dict[int, tuple[int, ...]]
                  ) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """``deep`` for the SLOW entries of the merged table: an entry (buddy /64s merged) has the
    union of its /64s' values when each of them has some."""
    out = []
    for start, plen, val in zip(v6.starts, v6.plens, v6.vals, strict=True):
        if val != SLOW or 64 - plen > 4:
            continue
        parts = [deep.get(start + i) for i in range(1 << (64 - plen))]
        if all(p is not None for p in parts):
            out.append((start, tuple(dict.fromkeys(v for p in parts for v in p))))  # type: ignore[union-attr]
    return tuple(out)


def _location(fields: tuple | None) -> Location:
    if fields is None:
        return _NOWHERE
    country, continent, lat, lon = fields
    return Location(country, continent, lat, lon, 0, _NOWHERE.network, True)
