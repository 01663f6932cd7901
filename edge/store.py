"""The in-process cache store: byte-bounded LRU (cachetools) with a per-entry time to live.

Rules:

- Bounded in bytes: an entry's size is its body plus its serialised head plus a fixed overhead;
  the least recently used entries are evicted first when a new one does not fit.
- An entry lives until ``keep_until``: the end of its freshness plus the longest window in
  which it may still be used stale (stale-while-revalidate, stale-if-error) or revalidated
  (entries with a validator are kept ``revalidate_keep`` seconds more so a 304 can refresh
  them). Expiry uses the clock given to the store, never one read elsewhere.
- Variants: entries are keyed by (primary key, variant key). A lookup tries every stored
  variant of the primary key and returns the one whose own Vary fields match the request
  (RFC 9111 §4.1).
- Hit-for-miss markers (Varnish): an uncacheable response leaves a marker entry with no body
  for a few seconds so that later requests skip coalescing and go straight to the origin.
- Purge: by primary key (every variant), by key prefix, by surrogate key; ``soft`` marks the
  entries stale (they must be revalidated before use, and may still serve stale-if-error)
  instead of dropping them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from cachetools import LRUCache

from edge.policy.freshness import StoredMeta
from edge.policy.vary import vary_key


def primary_key(host: str, target: str) -> str:
    """The primary cache key: scheme, lower-case Host without the default port, and the request
    target as received (the same form as ``edge.policy.invalidation.normalise_uri``)."""
    host = host.lower() or "localhost"
    if host.endswith(":80"):
        host = host[:-3]
    return f"http://{host}{target}"


ENTRY_OVERHEAD = 512  # bytes counted for the key, metadata and bookkeeping of one entry
Headers = tuple[tuple[str, str], ...]


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

    def __post_init__(self) -> None:
        self.size = len(self.body) + len(self.head) + ENTRY_OVERHEAD

    @property
    def fresh_until(self) -> float:
        """Epoch seconds at which the entry's age reaches its lifetime."""
        return self.meta.response_time + self.lifetime - self.initial_age

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.meta.response_time)


class MemoryStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cache: LRUCache[tuple[str, str], Entry] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda e: e.size)
        self._variants: dict[str, set[str]] = {}
        self._tags: dict[str, set[tuple[str, str]]] = {}

    # -- reading ------------------------------------------------------------------------------
    def _lookup(self, k: tuple[str, str], now: float) -> Entry | None:
        try:
            entry = self._cache[k]  # marks it recently used
        except KeyError:
            return None
        if entry.keep_until <= now:
            self._drop([k], soft=False)
            return None
        return entry

    def get(self, key: str, request_headers: Headers, now: float) -> Entry | None:
        """The stored entry for this request, choosing among variants by their Vary."""
        plain = self._lookup((key, ""), now)
        if plain is not None and not plain.vary:
            return plain
        variants = self._variants.get(key)
        if not variants:
            return plain
        for variant in list(variants):
            entry = self._lookup((key, variant), now)
            if entry is None:
                variants.discard(variant)
                continue
            if variant == "" or vary_key(entry.vary, request_headers) == variant:
                return entry
        if not variants:
            self._variants.pop(key, None)
        return None

    def peek_any(self, key: str) -> bool:
        """Whether any variant of ``key`` is stored (for Cache-Status ``vary-miss``)."""
        return bool(self._variants.get(key))

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size_bytes(self) -> int:
        return int(self._cache.currsize)

    # -- writing ------------------------------------------------------------------------------
    def put(self, entry: Entry, now: float) -> bool:
        """Store (or replace) an entry; False when it is too large or already expired."""
        if entry.size > self.max_bytes or entry.keep_until <= now:
            return False
        k = (entry.key, entry.variant)
        variants = self._variants.get(entry.key)
        if variants:  # the newest response's Vary wins: drop variants selected another way
            stale = [(entry.key, v) for v in variants
                     if (other := self._cache.get((entry.key, v))) is not None
                     and other.vary != entry.vary and v != entry.variant]
            self._drop(stale, soft=False)
        self._cache[k] = entry
        if k not in self._cache:
            return False
        self._variants.setdefault(entry.key, set()).add(entry.variant)
        for tag in entry.surrogate_keys:
            self._tags.setdefault(tag, set()).add(k)
        return True

    def remove(self, key: str) -> int:
        """Drop every variant of a primary key; the number of entries dropped."""
        return self._drop([(key, v) for v in self._variants.pop(key, ())], soft=False)

    # -- purging ------------------------------------------------------------------------------
    def purge_key(self, key: str, soft: bool = False) -> int:
        if soft:
            return self._drop([(key, v) for v in self._variants.get(key, ())], soft=True)
        return self.remove(key)

    def purge_prefix(self, prefix: str, soft: bool = False) -> int:
        keys = [k for k in list(self._cache.keys()) if k[0].startswith(prefix)]
        return self._drop(keys, soft)

    def purge_tag(self, tag: str, soft: bool = False) -> int:
        keys = self._tags.get(tag, set()) if soft else self._tags.pop(tag, set())
        return self._drop(list(keys), soft)

    def sweep(self, now: float) -> int:
        """Drop every expired entry; the number dropped."""
        expired = [k for k, e in list(self._cache.items()) if e.keep_until <= now]
        return self._drop(expired, soft=False)

    def clear(self) -> None:
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
                variants = self._variants.get(k[0])
                if variants is not None:
                    variants.discard(k[1])
                    if not variants:
                        del self._variants[k[0]]
        if len(self._tags) > 2 * len(self._cache) + 1024:
            self._prune_tags()
        return count

    def _prune_tags(self) -> None:
        live = self._cache
        self._tags = {t: {k for k in ks if k in live} for t, ks in self._tags.items()}
        self._tags = {t: ks for t, ks in self._tags.items() if ks}
