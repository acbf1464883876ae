"""The retry worker outlives a failed check after an ambiguous POST (httpx.MockTransport)."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.chatwoot import ChatwootClient
from consumers.deliver import Deliverer, Retrier
from consumers.runner import StreamEntry
from consumers.store import Store
from ingress import events
from ingress.settings import Secret
from ingress.topology import Topology
from tests.consumers.test_deliver import Clock
from tests.pipeline import rows, xadd

LIST_FAILURES = [
    pytest.param(lambda _: httpx.Response(500, text="oops"), id="500"),
    pytest.param(lambda _: httpx.Response(401, json={"error": "Unauthorized"}), id="401"),
    pytest.param(lambda _: httpx.Response(404, json={"error": "not found"}), id="404"),
    pytest.param("connect", id="connection-error"),
]


class Chatwoot:
    """POSTs time out after sending (ambiguous); listing messages fails as told."""

    def __init__(self, list_failure: object) -> None:
        self.list_failure = list_failure
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.method)
        if request.method == "POST":
            raise httpx.ReadTimeout("sent, no answer", request=request)
        if self.list_failure == "connect":
            raise httpx.ConnectError("refused", request=request)
        assert callable(self.list_failure)
        answer: httpx.Response = self.list_failure(request)
        return answer


@pytest.mark.parametrize("list_failure", LIST_FAILURES)
async def test_a_failed_check_after_an_ambiguous_post_holds_the_reply(
    list_failure: object, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The check whether an ambiguous POST landed fails: the reply is held with backoff (its
    outcome is unknown), never sent again blindly, and the retry worker keeps running."""
    chatwoot = Chatwoot(list_failure)
    spec = msgspec.structs.replace(
        topology.delivery, retry_ms=(10, 20), jitter=0.0, max_attempts=3, poll_ms=10
    )
    topo = msgspec.structs.replace(topology, delivery=spec)
    async with ChatwootClient(
        "https://chat.example.com",
        Secret("bot"),
        user_token=Secret("user"),
        transport=httpx.MockTransport(chatwoot),
    ) as client:
        clock = Clock()  # the test moves time: a hold is judged without racing the wall clock
        deliverer = Deliverer(
            store, client, topo, redis=redis, base_url=f"http://{topology.prefix}.faults",
            clock=clock,
        )  # fmt: skip
        retrier = Retrier(deliverer)
        reply = events.OutboundEntry(account=3, conversation=1046, content="hi", ref="amb-1")
        fields = {k.encode(): v for k, v in events.encode(reply).items()}
        entry_id = await xadd(redis, topo.key("outbound"), fields)
        await deliverer(StreamEntry(id=entry_id, fields=fields, deliveries=1))
        assert chatwoot.calls == ["POST"]

        clock.advance(1)  # the retry is due
        assert await retrier.run_due() == 1  # the list call fails: no exception escapes
        assert chatwoot.calls == ["POST", "GET"]
        [row] = await rows(store, "SELECT status, next_attempt_at, last_error FROM outbound")
        assert row["status"] == "sending"  # unknown whether it landed: never posted again
        assert row["next_attempt_at"] > clock()  # held, with a backoff
        assert await retrier.run_due() == 0  # not due again at once

        task = asyncio.create_task(retrier.run())
        for _ in range(5):  # several polls, each finding the reply due and its check failing
            clock.advance(1)
            await asyncio.sleep(0.06)
        assert not task.done()
        assert chatwoot.calls.count("GET") > 2
        retrier.stop()
        await asyncio.wait_for(task, timeout=5)
    assert "POST" not in chatwoot.calls[1:]
