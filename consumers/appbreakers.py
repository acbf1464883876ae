"""A circuit breaker per worker app, shared by every process through one Redis hash: an app
that keeps failing is not called until its breaker's `open_ms` has passed."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers.backoff import Breaker

log = structlog.get_logger("push")


class Breakers:
    """One breaker per app, shared by every process through a Redis hash (advisory: two
    processes failing at once may each count; the breaker opens either way)."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def _all(self) -> dict[str, Breaker]:
        raw: Any = await self.redis.hgetall(self.key)
        out: dict[str, Breaker] = {}
        for app, value in raw.items():
            try:
                out[_text(app)] = msgspec.json.decode(value, type=Breaker)
            except msgspec.DecodeError:
                continue  # unreadable: as if closed
        return out

    async def open_apps(self, now: float) -> list[str]:
        return [app for app, b in (await self._all()).items() if b.state(now) == "open"]

    async def failed(self, app: str, now: float, *, threshold: int, open_s: float) -> None:
        raw: Any = await self.redis.hget(self.key, app)
        current = msgspec.json.decode(raw, type=Breaker) if raw else Breaker()
        after = current.failed(now, threshold=threshold, open_s=open_s)
        await self.redis.hset(self.key, app, msgspec.json.encode(after))
        if after.open_until and after.open_until != current.open_until:
            log.warning("push.breaker_opened", app=app, until=after.open_until)

    async def succeeded(self, app: str) -> None:
        await self.redis.hdel(self.key, app)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
