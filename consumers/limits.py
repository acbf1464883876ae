"""Limits every deliverer process shares through Redis: token buckets per Chatwoot host, per
account (when set) and per conversation, and a circuit breaker per account. Keys carry the
outbound stream's hash tag, so every key of a call is on one Redis Cluster slot."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers.backoff import Breaker
from consumers.counters import Counters
from ingress.topology import DeliverySpec, RateLimit

log = structlog.get_logger("limits")

# Refill each bucket by elapsed time; take one token from every bucket when each has one,
# else take none and say how long until all do (and which bucket binds). One round trip for
# all of a call's buckets, and no token lost from one bucket when another is empty. Redis' own
# clock, so that processes on different machines agree. KEYS: buckets; ARGV: capacity and
# tokens per ms of each. A key past the buckets is the account's breaker: when it holds any
# state, no token is taken and the state is returned ({-1, 0, failures, open_until}) for the
# caller to judge first; the usual call (no breaker state) costs one round trip, not two.
TOKEN_BUCKETS = """
local buckets = #ARGV / 2
if #KEYS > buckets then
  local b = redis.call('HMGET', KEYS[#KEYS], 'failures', 'open_until')
  if b[1] or b[2] then return {-1, 0, b[1] or '0', b[2] or '0'} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = {}
local wait, binding = 0, 0
for i = 1, buckets do
  local key = KEYS[i]
  local capacity, per_ms = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local n = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  n = math.min(capacity, n + (now - ts) * per_ms)
  if n < 1 then
    local need = math.ceil((1 - n) / per_ms)
    if need > wait then wait, binding = need, i end
  end
  tokens[i] = n
end
for i = 1, buckets do
  local key = KEYS[i]
  local capacity, per_ms = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local n = tokens[i]
  if wait == 0 then n = n - 1 end
  redis.call('HSET', key, 'tokens', tostring(n), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(capacity / per_ms) + 1000)
end
return {wait, binding}
"""

# A throttled bucket is logged once per this interval, with how many waits it caused.
THROTTLE_LOG_EVERY_S = 10.0


class ThrottleLog:
    """`limit.throttled` summarized: a bucket's first wait is logged at once, the waits after
    it once per interval (`waits`, `max_wait_ms`), not one line per wait."""

    def __init__(
        self, *, every_s: float = THROTTLE_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self.clock = clock
        self._logged: dict[str, float] = {}  # bucket -> when its last line was written
        self._pending: dict[str, tuple[int, int]] = {}  # bucket -> (waits, max_wait_ms)

    def waited(self, bucket: str, wait_ms: int) -> None:
        waits, longest = self._pending.get(bucket, (0, 0))
        self._pending[bucket] = (waits + 1, max(longest, wait_ms))
        self.flush()

    def flush(self) -> None:
        """Write the lines whose interval is over (cheap: only throttled buckets are kept)."""
        if not self._pending:
            return
        now = self.clock()
        due = [b for b in self._pending if now - self._logged.get(b, -1e18) >= self.every_s]
        for bucket in due:
            waits, longest = self._pending.pop(bucket)
            self._logged[bucket] = now
            log.info("limit.throttled", bucket=bucket, waits=waits, max_wait_ms=longest)
        # Buckets quiet for an interval are forgotten: their next wait is logged at once.
        for bucket in [b for b, at in self._logged.items() if now - at >= self.every_s]:
            if bucket not in self._pending:
                del self._logged[bucket]


class Limits:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        tag: str,
        spec: DeliverySpec,
        counters: Counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.counters = counters
        self.tag = tag  # "{sb:outbound}"
        self.spec = spec
        self.throttles = ThrottleLog(clock=clock)
        self._buckets: Any = redis.register_script(TOKEN_BUCKETS)

    def buckets(
        self, host: str, account: int, conversation: int | None = None
    ) -> list[tuple[str, RateLimit]]:
        """The buckets a call to Chatwoot takes a token from: its host (Chatwoot limits each
        client IP), its account when an account limit is set, and its conversation (Chatwoot
        refuses a conversation's 201st message within a minute) when it names one."""
        found = [(f"{self.tag}:limit:host:{host}", self.spec.host_limit)]
        if self.spec.account_limit is not None:
            found.append((f"{self.tag}:limit:account:{account}", self.spec.account_limit))
        if conversation is not None and self.spec.conversation_limit is not None:
            key = f"{self.tag}:limit:conversation:{account}:{conversation}"
            found.append((key, self.spec.conversation_limit))
        return found

    async def wait_for_token(
        self, host: str, account: int, conversation: int | None = None
    ) -> float:
        """Seconds until every bucket has a token for this call (0: go now, tokens taken)."""
        wait = await self._take(host, account, conversation, breaker=False)
        assert isinstance(wait, float)
        return wait

    async def admit(
        self, host: str, account: int, conversation: int | None = None
    ) -> Breaker | float:
        """`wait_for_token` when the account's breaker holds no state (the usual case), in the
        same round trip; else the breaker, and no token taken: the caller judges it first."""
        return await self._take(host, account, conversation, breaker=True)

    async def _take(
        self, host: str, account: int, conversation: int | None, *, breaker: bool
    ) -> Breaker | float:
        buckets = self.buckets(host, account, conversation)
        args: list[float] = []
        for _, limit in buckets:
            args += _rate(limit)
        keys = [key for key, _ in buckets] + ([self._breaker_key(account)] if breaker else [])
        reply: Any = await self._buckets(keys=keys, args=args)
        wait_ms, binding = int(reply[0]), int(reply[1])
        if wait_ms < 0:
            state = [v.decode() if isinstance(v, bytes) else v for v in reply[2:4]]
            return msgspec.convert({"failures": state[0], "open_until": state[1]}, Breaker,
                                   strict=False)  # fmt: skip
        if wait_ms <= 0:
            self.throttles.flush()
            return 0.0
        await self.counters.add("deliver.throttled")
        self.throttles.waited(buckets[binding - 1][0], wait_ms)
        return wait_ms / 1000

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

    async def succeeded(self, account: int, *, count: str | None = None) -> None:
        """A call went through: the account's breaker closes. `count`: a counter to add one
        to in the same round trip."""
        key = self._breaker_key(account)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(key, f"{key}:probe")
        if count is not None and self.counters.key is not None:
            pipe.hincrby(self.counters.key, count, 1)
        replies: Any = await pipe.execute()
        if replies[0]:
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
