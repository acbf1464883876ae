"""Limits every deliverer process shares through Redis: token buckets per Chatwoot host and per
account, and a circuit breaker per account. Keys carry the outbound stream's hash tag."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers.backoff import Breaker
from consumers.counters import Counters
from ingress.topology import DeliverySpec, RateLimit

log = structlog.get_logger("limits")

# Refill by elapsed time, take one token if there is one, else say how long until there is.
# Redis' own clock, so that processes on different machines agree.
TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - ts) * per_ms)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / per_ms) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return wait
"""


class Limits:
    def __init__(
        self, redis: aioredis.Redis, *, tag: str, spec: DeliverySpec, counters: Counters
    ) -> None:
        self.redis = redis
        self.counters = counters
        self.tag = tag  # "{sb:outbound}"
        self.spec = spec
        self._bucket: Any = redis.register_script(TOKEN_BUCKET)

    async def wait_for_token(self, host: str, account: int) -> float:
        """Seconds until both buckets have a token for this call (0: go now, token taken)."""
        for key, limit in (
            (f"{self.tag}:limit:host:{host}", self.spec.host_limit),
            (f"{self.tag}:limit:account:{account}", self.spec.account_limit),
        ):
            wait_ms = int(await self._bucket(keys=[key], args=_rate(limit)))
            if wait_ms > 0:
                await self.counters.add("deliver.throttled")
                log.info("limit.throttled", bucket=key, wait_ms=wait_ms)
                return wait_ms / 1000
        return 0.0

    def _breaker_key(self, account: int) -> str:
        return f"{self.tag}:breaker:{account}"

    async def breaker(self, account: int) -> Breaker:
        raw: Any = await self.redis.hgetall(self._breaker_key(account))
        if not raw:
            return Breaker()
        return msgspec.convert({k.decode(): v.decode() for k, v in raw.items()}, Breaker,
                               strict=False)  # fmt: skip

    async def probe(self, account: int, now: float) -> bool:
        """Half-open: only one call in the whole deployment tries the account again."""
        key = f"{self._breaker_key(account)}:probe"
        hold = int(self.spec.timeout_ms + 1000)
        return bool(await self.redis.set(key, str(now), nx=True, px=hold))

    async def succeeded(self, account: int) -> None:
        key = self._breaker_key(account)
        if await self.redis.delete(key, f"{key}:probe"):
            log.info("breaker.closed", account=account)

    async def failed(self, account: int, now: float) -> None:
        before = await self.breaker(account)
        after = before.failed(
            now, threshold=self.spec.breaker.failures, open_s=self.spec.breaker.open_ms / 1000
        )
        key = self._breaker_key(account)
        await self.redis.hset(key, mapping={"failures": after.failures,
                                            "open_until": after.open_until})  # fmt: skip
        await self.redis.delete(f"{key}:probe")
        if after.open_until != before.open_until:
            await self.counters.add("deliver.breaker_opened")
            log.warning("breaker.opened", account=account, failures=after.failures,
                        open_until=after.open_until)  # fmt: skip


def _rate(limit: RateLimit) -> list[float]:
    return [limit.capacity, limit.per_minute / 60_000]
