"""Writes entries to Redis streams."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingress import events
from ingress.errors import PublishError


class Publisher:
    """XADD of typed entries; a Redis failure becomes a PublishError the caller answers for."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def publish(self, key: str, entry: events.Entry) -> str:
        try:
            entry_id = await self.redis.xadd(key, events.encode(entry))  # type: ignore[arg-type]
        except RedisError as exc:
            raise PublishError(f"XADD {key} failed: {exc}") from exc
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False
