"""CacheManager: a JetStream KV cache with the legacy per-type TTLs.

The legacy CacheManager kept Redis keys ``<cache_type>:<key>`` with TTLs per type
(nlu_results 5 min, model_decisions 10 min, context_summaries 1 h, tool_responses 15 min,
memory 12 h); the config's ``cache.ttls`` carries them. Entries live in the KV bucket
``cache.bucket`` under ``<cache_type>.<sha256(key)[:40]>`` (KV keys allow few characters; the
original key stays in the value). Each entry is written with a per-message TTL
(``Nats-TTL``), so the server removes it when it expires; the stored ``expires_at`` makes a
read exact to the millisecond in between.

Writes and invalidations are ``cache.set.v1`` / ``cache.invalidated.v1`` events (background,
batched): the cache can be audited, and hit/miss counts are metrics.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from mvs.errors import BusError
from mvs.metrics import CACHE_REQUESTS
from mvs.service import Service, endpoint
from streams.events.system import CacheEntryInvalidated, CacheEntrySet

__all__ = ["LEGACY_TTLS", "CacheGet", "CacheManager", "CacheReply", "CacheSet", "kv_key"]

LEGACY_TTLS = {
    "nlu_results": 300.0,
    "model_decisions": 600.0,
    "context_summaries": 3600.0,
    "tool_responses": 900.0,
    "memory": 43200.0,
}


class CacheGet(msgspec.Struct, frozen=True, kw_only=True):
    cache_type: str
    key: str


class CacheSet(msgspec.Struct, frozen=True, kw_only=True):
    cache_type: str
    key: str
    value: Any
    ttl_s: float | None = None  # default: the type's TTL


class CacheReply(msgspec.Struct, frozen=True, kw_only=True):
    hit: bool
    cache_type: str
    key: str
    value: Any = None
    ttl_s: float = 0.0
    expires_at: float | None = None


class _Entry(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    value: Any
    stored_at: float
    expires_at: float


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Entry)


def kv_key(cache_type: str, key: str) -> str:
    return f"{cache_type}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"


class CacheManager(Service):
    """Typed cache with per-type TTLs on JetStream KV."""

    name = "CacheManager"

    async def on_start(self) -> None:
        cfg = self.ctx.config.cache if self.ctx.config is not None else None
        self.ttls = dict(cfg.ttls) if cfg and cfg.ttls else dict(LEGACY_TTLS)
        self.bucket = cfg.bucket if cfg else "mvs_cache"
        js = self.ctx.js
        try:
            try:
                self.kv: KeyValue = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                self.kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=self.bucket,
                        description="MVS CacheManager entries (per-message TTL)",
                        storage=StorageType.FILE,
                        # the longest TTL bounds what the bucket keeps if a TTL is missed
                        ttl=max(self.ttls.values()),
                        limit_marker_ttl=1.0,
                    )
                )
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise BusError(f"cannot open the cache bucket {self.bucket}: {exc!r}") from exc

    def _ttl(self, cache_type: str, ttl_s: float | None) -> float:
        if cache_type not in self.ttls:
            raise ValueError(
                f"unknown cache_type {cache_type!r}; known: {', '.join(sorted(self.ttls))}"
            )
        ttl = self.ttls[cache_type] if ttl_s is None else ttl_s
        if ttl <= 0:
            raise ValueError("ttl_s must be positive")
        return ttl

    @endpoint("get", request=CacheGet, reply=CacheReply, record=False)
    async def get(self, req: CacheGet) -> CacheReply:
        ttl = self._ttl(req.cache_type, None)
        try:
            entry = await self.kv.get(kv_key(req.cache_type, req.key))
        except nats.js.errors.KeyNotFoundError:
            entry = None
        now = time.time()
        if entry is not None and entry.value:
            try:
                stored = _dec.decode(entry.value)
            except msgspec.DecodeError:
                stored = None
            if stored is not None and stored.key == req.key and stored.expires_at > now:
                CACHE_REQUESTS.labels(req.cache_type, "hit").inc()
                return CacheReply(hit=True, cache_type=req.cache_type, key=req.key,
                                  value=stored.value, ttl_s=round(stored.expires_at - now, 3),
                                  expires_at=stored.expires_at)
        CACHE_REQUESTS.labels(req.cache_type, "miss").inc()
        return CacheReply(hit=False, cache_type=req.cache_type, key=req.key, ttl_s=ttl)

    @endpoint("set", request=CacheSet, reply=CacheReply)
    async def set(self, req: CacheSet) -> CacheReply:
        ttl = self._ttl(req.cache_type, req.ttl_s)
        now = time.time()
        data = _enc.encode(_Entry(key=req.key, value=req.value, stored_at=now,
                                  expires_at=now + ttl))
        # Per-message TTL is whole seconds on the wire; round up so the server never drops an
        # entry before its expires_at.
        await self.ctx.js.publish(
            f"$KV.{self.bucket}.{kv_key(req.cache_type, req.key)}", data,
            msg_ttl=float(max(1, int(ttl + 0.999))),
        )
        self.ctx.events.emit(CacheEntrySet(cache_type=req.cache_type, entry_key=req.key,
                                           ttl_s=ttl, size_bytes=len(data), source=self.name))
        return CacheReply(hit=True, cache_type=req.cache_type, key=req.key, value=req.value,
                          ttl_s=ttl, expires_at=now + ttl)

    @endpoint("invalidate", request=CacheGet, reply=CacheReply)
    async def invalidate(self, req: CacheGet) -> CacheReply:
        self._ttl(req.cache_type, None)
        await self.kv.delete(kv_key(req.cache_type, req.key))
        self.ctx.events.emit(CacheEntryInvalidated(cache_type=req.cache_type, entry_key=req.key,
                                                   reason="requested", source=self.name))
        return CacheReply(hit=False, cache_type=req.cache_type, key=req.key)

    async def check_health(self) -> dict[str, str]:
        try:
            await self.kv.status()
        except Exception as exc:
            return {"bucket": f"unavailable: {exc!r}"}
        return {"bucket": "ok"}
