"""Writes entries to Redis streams: at most once per Chatwoot delivery id, and to the local
spool while Redis is unreachable."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from ingress import events
from ingress.errors import PublishError
from ingress.spool import Record, Spool, SpoolFull

log = structlog.get_logger("publish")

# XADD unless this delivery id was stored within the window; both keys share the stream's
# Cluster slot (the seen-key carries the stream key as its hash tag).
XADD_ONCE = """
if KEYS[2] ~= nil and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
if KEYS[2] ~= nil then redis.call('SET', KEYS[2], id, 'EX', ARGV[1]) end
return id
"""


class Published(msgspec.Struct, frozen=True):
    entry: str | None = None  # the stream entry id; None when spooled or a duplicate
    spooled: bool = False
    duplicate: bool = False


class Publisher:
    def __init__(
        self, redis: aioredis.Redis, *, spool: Spool | None = None, dedup_window_s: int = 600
    ) -> None:
        self.redis = redis
        self.spool = spool
        self.dedup_window_s = dedup_window_s
        self._script: Any = redis.register_script(XADD_ONCE)

    async def publish(self, key: str, entry: events.Entry, *, delivery: str = "") -> Published:
        fields = events.encode(entry)
        if self.spool is not None and self.spool.size() > 0:
            # Older webhooks wait in the spool: queue behind them, keeping Chatwoot's order.
            return await self._to_spool(Record(key, fields, delivery), cause="spool draining")
        try:
            entry_id = await self._xadd(key, fields, delivery)
        except RedisError as exc:
            if self.spool is None:
                raise PublishError(f"XADD {key} failed: {exc}") from exc
            return await self._to_spool(Record(key, fields, delivery), cause=str(exc))
        return Published(entry=entry_id, duplicate=entry_id is None)

    async def _xadd(self, key: str, fields: dict[str, bytes], delivery: str) -> str | None:
        keys = [key, f"{{{key}}}:delivery:{delivery}"] if delivery else [key]
        args: list[Any] = [self.dedup_window_s]
        for name, value in fields.items():
            args += [name, value]
        entry_id = await self._script(keys=keys, args=args)
        if entry_id is None:
            return None
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _to_spool(self, record: Record, *, cause: str) -> Published:
        assert self.spool is not None
        try:
            await self.spool.append(record)
        except (SpoolFull, OSError) as exc:
            raise PublishError(f"Redis unavailable ({cause}) and spool refused: {exc}") from exc
        return Published(spooled=True)

    async def drain_spool(self) -> int:
        """Replay the spool into Redis (raises RedisError while Redis is still away)."""
        if self.spool is None or self.spool.size() == 0:
            return 0

        async def replay(record: Record) -> None:
            await self._xadd(record.key, record.fields, record.delivery)

        drained = await self.spool.drain(replay)
        log.info("spool.drained", entries=drained)
        return drained

    async def keep_draining(self, every_s: float = 0.5) -> None:
        """The background task: drain whenever the spool holds something and Redis answers."""
        while True:
            try:
                await self.drain_spool()
            except RedisError:
                pass  # still away: try again shortly
            await asyncio.sleep(every_s)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False
