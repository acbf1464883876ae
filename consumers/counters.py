"""Counts the consumer processes keep in one Redis hash (`<prefix>:metrics`): summed across
processes, readable with `redis-cli HGETALL sb:metrics`, served by the ingress's /metrics."""

from __future__ import annotations

import redis.asyncio as aioredis

from ingress.connect import UNAVAILABLE


class Counters:
    def __init__(self, redis: aioredis.Redis, *, metrics_key: str | None) -> None:
        self.redis = redis
        self.key = metrics_key  # None: count nothing

    async def add(self, name: str, amount: int = 1) -> None:
        """Best effort: a count lost to a Redis hiccup must not fail the work it counts."""
        if self.key is None:
            return
        try:
            await self.redis.hincrby(self.key, name, amount)
        except UNAVAILABLE:
            pass
