"""The shared tier's pure parts: settings, results, the key layout and the Lua scripts.

No Redis imports (edge/tier/conn.py has them all); the protocol that uses these is
edge/tier/protocol.py.

- Key layout (``P`` = settings.prefix, ``H`` = sha256(primary key) hex[:32]; ``{H}`` is a
  Redis Cluster hash tag, so every key of one primary key lives in one slot and one script or
  pipeline can touch them all):
    P{H}:e:<variant>  entry blob (entrycodec bytes), PX = the caller's ttl (keep_until - now)
    P{H}:vary         JSON list of the latest stored response's Vary field values
    P{H}:variants     set of the stored variant keys
    P{H}:key          the primary key text (for prefix purges)
    P{H}:soft         set of soft-purged variants (a new store of a variant removes it)
    P{H}:lease        cross-node fill lease, value = node id, PX = lease_ms
    Ptag:<tag>        set of primary keys carrying the surrogate key (its own slot)
  Channels: ``Ppurge`` (JSON {kind, value, soft, from}) and ``Pfilled`` (H of a filled key).
  vary / variants / key / soft / tag sets keep the longest TTL of the entries they describe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

PurgeCallback = Callable[[str, str, bool], object]


def key_hash(primary: str) -> str:
    """``H``: the hash of a primary key, also the payload of a "filled" notice."""
    return hashlib.sha256(primary.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def key_base(prefix: str, primary: str) -> str:
    """``P{H}:``, the start of every key of one primary key (one cluster slot)."""
    return f"{prefix}{{{key_hash(primary)}}}:"


def tag_key(prefix: str, tag: str) -> str:
    """``Ptag:<tag>``, the set of primary keys carrying a surrogate key."""
    return f"{prefix}tag:{tag}"

STORE_SCRIPT = """
local ttl = tonumber(ARGV[2])
local function keep(k)
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
keep(KEYS[2])
redis.call('SADD', KEYS[3], ARGV[4])
keep(KEYS[3])
redis.call('SET', KEYS[4], ARGV[5], 'KEEPTTL')
keep(KEYS[4])
redis.call('SREM', KEYS[5], ARGV[4])
return 1
"""
TAG_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""
# KEYS: variants, soft. ARGV: the key base "P{H}:", "1" for soft. The entry, vary and key keys
# are built from the base: same hash tag, so same slot as KEYS[1] (cluster-safe).
PURGE_SCRIPT = """
local vs = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, v in ipairs(vs) do n = n + redis.call('EXISTS', ARGV[1] .. 'e:' .. v) end
if ARGV[2] == '1' then
  if #vs > 0 then
    redis.call('SADD', KEYS[2], unpack(vs))
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  end
  return n
end
for _, v in ipairs(vs) do redis.call('DEL', ARGV[1] .. 'e:' .. v) end
redis.call('DEL', KEYS[1], KEYS[2], ARGV[1] .. 'vary', ARGV[1] .. 'key')
return n
"""


@dataclass(frozen=True, slots=True)
class SharedSettings:
    url: str | None
    cluster_nodes: tuple[str, ...]
    prefix: str = "geoedge:"
    timeout: float = 0.05
    max_object_bytes: int = 1 << 20
    lease_ms: int = 5000
    wait_timeout: float = 1.0
    breaker_threshold: int = 5
    breaker_reset: float = 2.0

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.cluster_nodes):
            raise ValueError("shared tier: give exactly one of url or cluster_nodes")
        if self.url and urlsplit(self.url).scheme not in ("redis", "rediss"):
            raise ValueError(f"shared tier: not a redis:// URL: {self.url!r}")
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"shared tier: cluster node must be host:port, got {node!r}")
        if any(c in self.prefix for c in "{}*?[]\\"):
            raise ValueError("shared tier: prefix must not contain braces or glob characters")
        if self.timeout <= 0 or self.max_object_bytes <= 0 or self.lease_ms <= 0:
            raise ValueError("shared tier: timeout, max_object_bytes and lease_ms must be > 0")


@dataclass(frozen=True, slots=True)
class SharedHit:
    blob: bytes  # the entry as stored (decode with edge.tier.entrycodec.decode_entry)
    soft: bool  # soft-purged: revalidate before use


