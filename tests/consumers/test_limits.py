"""Rate limits shared through Redis: Chatwoot's own limits by default, one line per throttle."""

from __future__ import annotations

import uuid

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers.backoff import Breaker
from consumers.counters import Counters
from consumers.limits import Limits
from ingress.topology import RateLimit, Topology


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(redis: aioredis.Redis, topology: Topology, clock: Clock | None = None) -> Limits:
    # A tag of its own per test: buckets start full.
    tag = f"{{{topology.prefix}:outbound:{uuid.uuid4().hex}}}"
    counters = Counters(redis, metrics_key=None)
    if clock is None:
        return Limits(redis, tag=tag, spec=topology.delivery, counters=counters)
    return Limits(redis, tag=tag, spec=topology.delivery, counters=counters, clock=clock)


async def test_defaults_do_not_throttle_an_account_below_chatwoots_limit(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Chatwoot limits a client IP to 3,000 calls a minute and has no account limit: 100
    replies at once to one account's conversations all go now (600/min used to stop the
    61st), and the host limit stays below Chatwoot's."""
    assert topology.delivery.host_limit.per_minute < 3000
    assert topology.delivery.account_limit is None
    shared = limits(redis, topology)
    waits = [
        await shared.wait_for_token("chatwoot.test", 3, conversation) for conversation in range(100)
    ]
    assert waits == [0.0] * 100


async def test_a_conversation_gets_at_most_chatwoots_200_a_minute(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A conversation's burst is cut at its bucket, within Chatwoot's 200 messages/min, while
    another conversation of the same account still goes at once."""
    spec = topology.delivery.conversation_limit
    assert spec is not None and spec.capacity + spec.per_minute <= 200
    shared = limits(redis, topology)
    waits = [await shared.wait_for_token("chatwoot.test", 3, 41) for _ in range(spec.capacity)]
    assert waits == [0.0] * spec.capacity
    throttled = await shared.wait_for_token("chatwoot.test", 3, 41)
    assert 0 < throttled <= 60 / spec.per_minute + 0.01
    assert await shared.wait_for_token("chatwoot.test", 3, 42) == 0.0


async def test_an_empty_bucket_takes_no_token_from_the_others(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Waiting on the conversation's bucket leaves the host's tokens to other conversations."""
    slow = msgspec.structs.replace(
        topology.delivery,
        host_limit=RateLimit(per_minute=6, burst=100),  # a token in 10 s: no refill meanwhile
        conversation_limit=RateLimit(per_minute=6, burst=2),
    )
    shared = limits(redis, msgspec.structs.replace(topology, delivery=slow))
    waits = [await shared.wait_for_token("chatwoot.test", 3, 41) for _ in range(12)]
    assert waits[:2] == [0.0, 0.0] and all(w > 0 for w in waits[2:])
    [(host_key, _), *_] = shared.buckets("chatwoot.test", 3, 41)
    tokens = float(await redis.hget(host_key, "tokens") or 0)
    assert 97.9 < tokens < 98.5  # only the two calls that went took a host token


async def test_throttles_are_logged_once_per_bucket_per_interval(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """100 waits on one bucket within 10 s make one line at once and one summary after the
    interval, not 100 lines."""
    clock = Clock()
    shared = limits(redis, topology, clock)
    spec = topology.delivery.conversation_limit
    assert spec is not None
    with structlog.testing.capture_logs() as logs:
        for _ in range(spec.capacity):
            await shared.wait_for_token("chatwoot.test", 3, 41)
        for _ in range(100):
            assert await shared.wait_for_token("chatwoot.test", 3, 41) > 0
        clock.now += 10
        await shared.wait_for_token("chatwoot.test", 3, 99)  # any call writes what is due
    lines = [e for e in logs if e["event"] == "limit.throttled"]
    assert [line["waits"] for line in lines] == [1, 99]
    assert lines[0]["bucket"].endswith(":limit:conversation:3:41")
    assert lines[0]["max_wait_ms"] > 0 and lines[1]["max_wait_ms"] > 0


async def test_admit_takes_the_tokens_in_one_call_when_the_breaker_holds_nothing(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """The usual call: no breaker state, the tokens are taken in the same round trip, as
    `wait_for_token` takes them (a conversation's burst is cut at its bucket all the same)."""
    spec = topology.delivery.conversation_limit
    assert spec is not None
    shared = limits(redis, topology)
    admitted = [await shared.admit("chatwoot.test", 3, 41) for _ in range(spec.capacity)]
    assert admitted == [0.0] * spec.capacity
    throttled = await shared.admit("chatwoot.test", 3, 41)
    assert isinstance(throttled, float) and throttled > 0


async def test_admit_returns_the_breaker_and_takes_no_token_when_it_holds_state(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A breaker with state is judged by the caller before any token is taken: the
    conversation's bucket keeps its whole burst."""
    spec = topology.delivery.conversation_limit
    assert spec is not None
    shared = limits(redis, topology)
    await shared.failed(3, now=1000.0)
    for _ in range(spec.capacity + 5):
        assert await shared.admit("chatwoot.test", 3, 41) == Breaker(failures=1, open_until=0.0)
    waits = [await shared.wait_for_token("chatwoot.test", 3, 41) for _ in range(spec.capacity)]
    assert waits == [0.0] * spec.capacity
    await shared.succeeded(3)
    assert await shared.admit("chatwoot.test", 3, 42) == 0.0
