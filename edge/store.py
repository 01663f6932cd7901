"""The in-process cache store: byte-bounded LRU (cachetools) with a per-entry time to live.

Rules:

- Bounded in bytes of real memory: an entry's size is its body, its serialised head, its key
  and variant key, its stored header fields (text plus a measured per-field overhead) and a
  measured per-entry overhead (``ENTRY_OVERHEAD``); the least recently used entries are
  evicted first when a new one does not fit.
- An entry lives until ``keep_until``: the end of its freshness plus the longest window in
  which it may still be used stale (stale-while-revalidate, stale-if-error) or revalidated
  (entries with a validator are kept ``revalidate_keep`` seconds more so a 304 can refresh
  them). Expiry uses the clock given to the store, never one read elsewhere.
- Variants (RFC 9111 §4.1): entries are keyed by (primary key, variant key). Per primary key
  the store keeps the distinct Vary field lists of what it holds (most recent first, usually
  one), so a lookup computes one variant key per list and finds the entry in one dictionary
  look-up, however many variants are stored. The request headers a variant is chosen by are
  those the origin saw (the caller passes them, or a function that makes them). At most
  ``max_variants`` variants per primary key: storing one more evicts the oldest.
- Nothing a request can provoke evicts what other requests stored: a response with another
  Vary is stored beside the existing variants, and a hit-for-miss marker (Varnish: an
  uncacheable answer leaves a marker with no body for a few seconds so that later requests
  skip coalescing) is stored for its own variant only, never over a live real entry.
- Purge: by primary key (every variant), by key prefix, by surrogate key; ``soft`` marks the
  entries stale (they must be revalidated before use, and may still serve stale-if-error)
  instead of dropping them.
- Lookups drop the expired entries they meet; ``sweep`` drops the others, looking only at
  the keys due by then (edge/expiry.py), at most ``SWEEP_LIMIT`` per call, never at the
  whole store. Stored entries are untracked by the garbage collector (edge/heap.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cachetools import Cache, LRUCache

from edge.expiry import ExpiryQueue
from edge.heap import untrack
from edge.policy.freshness import StoredMeta
from edge.policy.vary import vary_fields, vary_key

# Measured with bench/edge_memory.py (tracemalloc and RSS, CPython 3.11, 64-bit): what one
# entry costs beyond the bytes of its body, head, key, variant key and header text. The
# Entry and StoredMeta objects, the bytes/str object headers, the LRU's three dictionaries
# (data, sizes, order) and the variant index: 1,350 to 1,650 bytes (more while entries are
# evicted and replaced), and up to two items of the expiry queue (edge/expiry.py, rebuilt at
# twice the live entries: ~100 bytes each); each stored header field (a tuple and two str
# objects): about 160.
ENTRY_OVERHEAD = 1850
FIELD_OVERHEAD = 160
Headers = tuple[tuple[str, str], ...]
HeadersSource = Headers | Callable[[], Headers]  # the selecting headers, or how to get them
MAX_VARIANTS = 64
MAX_SPECS = 4  # distinct Vary field lists kept per primary key
SWEEP_LIMIT = 4096  # keys a sweep looks at per call (a few ms of the event loop)


@dataclass(slots=True)
class Entry:
    key: str  # primary key: scheme, host and request target
    variant: str  # the Vary key ("" when the response does not vary)
    vary: tuple[str, ...]  # the stored response's Vary field values
    meta: StoredMeta
    body: bytes
    head: bytes  # status line and the stored headers, serialised (no Age/Date/Connection)
    lifetime: float  # freshness lifetime in seconds
    initial_age: float  # corrected_initial_age (RFC 9111 §4.2.3)
    keep_until: float  # epoch seconds after which the entry is dropped
    surrogate_keys: frozenset[str] = frozenset()
    soft_purged: bool = False
    hit_for_miss: bool = False
    fast_until: float = 0.0  # before this, a request without directives is a plain fresh hit
    size: int = field(default=0)
    spec: tuple[str, ...] = ()  # the sorted lower-case field names ``vary`` lists
    # the variants delivered instead of this entry, by content coding (edge/compress.py);
    # None: delivered as stored. Counted in ``size`` (a shared identity body once).
    encoded: dict[str, Entry] | None = None

    def __post_init__(self) -> None:
        self.size = (len(self.body) + len(self.head) + len(self.key) + len(self.variant)
                     + ENTRY_OVERHEAD + sum(len(n) + len(v) + FIELD_OVERHEAD
                                            for n, v in self.meta.headers))
        self.spec = vary_fields(self.vary) or ()
        if self.encoded:
            self.size += sum(e.size - (len(e.body) if e.body is self.body else 0)
                             for e in self.encoded.values())

    @property
    def fresh_until(self) -> float:
        """Epoch seconds at which the entry's age reaches its lifetime."""
        return self.meta.response_time + self.lifetime - self.initial_age

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.meta.response_time)


def _untrack_entry(entry: Entry) -> None:
    untrack(entry, entry.meta, entry.surrogate_keys)
    if entry.encoded:
        untrack(entry.encoded)
        for variant in entry.encoded.values():
            untrack(variant, variant.meta, variant.surrogate_keys)


class _Variants:
    """What one primary key holds: its Vary field lists (most recent first) and its variant
    keys (oldest first)."""

    __slots__ = ("order", "specs")

    def __init__(self) -> None:
        self.specs: list[tuple[str, ...]] = []
        self.order: dict[str, None] = {}


class _LRU(LRUCache):  # type: ignore[type-arg]
    """An LRUCache that reports the entries it evicts to make room."""

    def __init__(self, maxsize: int, evicted: Callable[[tuple[str, str]], None]) -> None:
        super().__init__(maxsize=maxsize, getsizeof=lambda e: e.size)
        self._evicted = evicted

    def popitem(self) -> tuple[tuple[str, str], Entry]:
        k, entry = super().popitem()
        self._evicted(k)
        return k, entry

    def peek(self, k: tuple[str, str]) -> Entry | None:
        """The entry without marking it used (LRUCache's own item access moves what it
        reads to the recent end: a sweep through it reset the LRU order)."""
        return Cache.__getitem__(self, k) if k in self else None

    def live(self) -> list[tuple[float, tuple[str, str]]]:
        """(keep_until, key) of every entry, without marking any used."""
        get = Cache.__getitem__
        return [(get(self, k).keep_until, k) for k in list(self)]


class MemoryStore:
    def __init__(self, max_bytes: int, max_variants: int = MAX_VARIANTS) -> None:
        self.max_bytes = max_bytes
        self.max_variants = max_variants
        self._cache = _LRU(max_bytes, self._forget)
        self._variants: dict[str, _Variants] = {}
        self._tags: dict[str, set[tuple[str, str]]] = {}
        self._expiry = ExpiryQueue()  # what a sweep looks at (edge/expiry.py)

    def long_lived(self) -> list[object]:
        """The containers that live as long as the store (edge/heap.py settles them)."""
        inner = [v for v in vars(self._cache).values() if isinstance(v, dict)]  # cachetools'
        return [self._variants, self._tags, self._expiry.container, *inner]

    # -- reading ------------------------------------------------------------------------------
    def _lookup(self, k: tuple[str, str], now: float) -> Entry | None:
        try:
            entry: Entry = self._cache[k]  # marks it recently used
        except KeyError:
            return None
        if entry.keep_until <= now:
            self._drop([k], soft=False)
            return None
        return entry

    def get(self, key: str, request_headers: HeadersSource, now: float) -> Entry | None:
        """The stored entry for this request, chosen by the Vary of what is stored."""
        held = self._variants.get(key)
        if held is None:
            return None
        headers: Headers | None = None
        for spec in tuple(held.specs):
            if spec:
                if headers is None:
                    headers = request_headers() if callable(request_headers) else request_headers
                variant = vary_key(spec, headers) or ""
            else:
                variant = ""
            entry = self._lookup((key, variant), now)
            if entry is not None and entry.spec == spec:
                return entry
        return None

    def peek_any(self, key: str) -> bool:
        """Whether any variant of ``key`` is stored (for Cache-Status ``vary-miss``)."""
        return key in self._variants

    def variant_count(self, key: str) -> int:
        held = self._variants.get(key)
        return 0 if held is None else len(held.order)

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size_bytes(self) -> int:
        return int(self._cache.currsize)

    # -- writing ------------------------------------------------------------------------------
    def put(self, entry: Entry, now: float) -> bool:
        """Store (or replace) an entry; False when it is too large or already expired, or
        when it is a hit-for-miss marker and a live real entry holds its variant."""
        if entry.size > self.max_bytes or entry.keep_until <= now:
            return False
        k = (entry.key, entry.variant)
        current = self._cache.get(k)
        if entry.hit_for_miss and current is not None and not current.hit_for_miss and (
                current.keep_until > now):
            return False
        if current is not None and current.spec != entry.spec:
            self._drop([k], soft=False)  # same variant key, other field list: replace it
        self._cache[k] = entry
        if k not in self._cache:
            return False
        _untrack_entry(entry)  # in no cycle: out of the full collections' walk (edge/heap.py)
        if self._expiry.add(entry.keep_until, k, len(self._cache)):
            self._expiry.rebuild(self._cache.live())
        held = self._variants.get(entry.key)
        if held is None:
            held = self._variants[entry.key] = _Variants()
            untrack(held, held.specs)
        if not held.specs or held.specs[0] != entry.spec:
            with contextlib.suppress(ValueError):
                held.specs.remove(entry.spec)
            held.specs.insert(0, entry.spec)
            if len(held.specs) > MAX_SPECS:  # an origin that varies its Vary: keep the newest
                gone = held.specs.pop()
                self._drop([(entry.key, v) for v in list(held.order)
                            if (e := self._cache.get((entry.key, v))) is not None
                            and e.spec == gone], soft=False)
        held.order.pop(entry.variant, None)
        held.order[entry.variant] = None
        while len(held.order) > self.max_variants:
            self._drop([(entry.key, next(iter(held.order)))], soft=False)
        for tag in entry.surrogate_keys:
            self._tags.setdefault(tag, set()).add(k)
        return True

    def remove(self, key: str) -> int:
        """Drop every variant of a primary key; the number of entries dropped."""
        held = self._variants.get(key)
        return 0 if held is None else self._drop([(key, v) for v in list(held.order)], False)

    # -- purging ------------------------------------------------------------------------------
    def purge_key(self, key: str, soft: bool = False) -> int:
        if soft:
            held = self._variants.get(key)
            return 0 if held is None else self._drop([(key, v) for v in held.order], soft=True)
        return self.remove(key)

    def purge_prefix(self, prefix: str, soft: bool = False) -> int:
        keys = [k for k in list(self._cache.keys()) if k[0].startswith(prefix)]
        return self._drop(keys, soft)

    def purge_tag(self, tag: str, soft: bool = False) -> int:
        keys = self._tags.get(tag, set()) if soft else self._tags.pop(tag, set())
        return self._drop(list(keys), soft)

    def sweep(self, now: float, limit: int = SWEEP_LIMIT) -> int:
        """Drop what expired by ``now`` among the next ``limit`` keys due (edge/expiry.py);
        the number dropped. The LRU order is left as it is."""
        peek = self._cache.peek
        return self._drop([k for k in self._expiry.due(now, limit)
                           if (e := peek(k)) is not None and e.keep_until <= now], soft=False)

    def clear(self) -> None:
        self._expiry.clear()
        self._cache.clear()
        self._variants.clear()
        self._tags.clear()

    def _drop(self, keys: Iterable[tuple[str, str]], soft: bool) -> int:
        count = 0
        cache = self._cache
        for k in keys:
            entry = cache.get(k)
            if entry is None:
                continue
            count += 1
            if soft:
                entry.soft_purged = True
            else:
                with contextlib.suppress(KeyError):  # it may expire in between
                    del self._cache[k]
                self._forget(k)
        if len(self._tags) > 2 * len(self._cache) + 1024:
            self._prune_tags()
        return count

    def _forget(self, k: tuple[str, str]) -> None:
        """Unlist a variant that left the cache (dropped or evicted)."""
        held = self._variants.get(k[0])
        if held is None:
            return
        held.order.pop(k[1], None)
        if not held.order:
            del self._variants[k[0]]

    def _prune_tags(self) -> None:
        live = self._cache
        self._tags = {t: {k for k in ks if k in live} for t, ks in self._tags.items()}
        self._tags = {t: ks for t, ks in self._tags.items() if ks}
