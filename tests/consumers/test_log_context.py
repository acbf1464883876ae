"""Log context belongs to one unit of work: nothing one entry or reply bound reaches the lines
of the next, nor the loop's own lines."""

from __future__ import annotations

import asyncio
import datetime as dt

import redis.asyncio as aioredis
import structlog
from structlog.testing import capture_logs

from consumers.chatwoot import ChatwootClient
from consumers.polling import PollingWorker
from consumers.runner import StreamEntry
from consumers.store import Store
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Topology
from tests.conftest import Fake
from tests.consumers.test_deliver import client, deliver_runner, posts, reply
from tests.consumers.test_runner import add, runner
from tests.pipeline import feed, persist_runner, xrange

__all__ = ["client"]  # the fixture, shared with test_deliver
MERGED = [structlog.contextvars.merge_contextvars]


class Binding(PollingWorker):
    """Binds a reply's ref in each step, as the retry worker does."""

    name = "binding"
    poll_s = 0.01

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    async def step(self) -> int:
        self.steps += 1
        structlog.contextvars.bind_contextvars(ref=f"r{self.steps}")
        structlog.get_logger("test").info("step.done")
        if self.steps >= 2:
            self.stop()
        return 0


async def test_a_polling_step_context_ends_with_the_step() -> None:
    """What one step bound is on its own lines only: not on the next step's lines, nor on
    `runner.stopped`."""
    worker = Binding()
    with capture_logs(processors=MERGED) as logs:
        await asyncio.wait_for(worker.run(), timeout=5)
    steps = [line.get("ref") for line in logs if line["event"] == "step.done"]
    assert steps == ["r1", "r2"]
    [stopped] = [line for line in logs if line["event"] == "runner.stopped"]
    assert "ref" not in stopped


async def test_deliver_retries_stop_without_the_last_reply_ref(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The retry worker's `runner.stopped` does not carry the ref of the last reply it sent
    (it used to)."""
    fake.faults({"path": "messages", "status": 503, "times": 1})
    await reply(redis, topology, ref="the-last-one")
    delivery = deliver_runner(redis, store, topology, client)
    await delivery.runner.drain()  # the first attempt fails: a retry is scheduled
    delivery.clock.advance(1)
    with capture_logs(processors=MERGED) as logs:
        task = asyncio.create_task(delivery.retrier.run())
        for _ in range(250):
            if len(posts(fake)) == 2:
                break
            await asyncio.sleep(0.02)
        delivery.retrier.stop()
        await asyncio.wait_for(task, timeout=10)
    assert len(posts(fake)) == 2
    assert any(line.get("ref") == "the-last-one" for line in logs)  # bound while at work
    [stopped] = [line for line in logs if line["event"] == "runner.stopped"]
    assert "ref" not in stopped


async def test_a_stream_entry_context_ends_with_the_entry(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """What a handler bound (a delivery id) is gone once its entry is done, and what a batch
    handler bound once its batch is: the runner's own lines start clean."""

    async def handler(entry: StreamEntry) -> None:
        structlog.contextvars.bind_contextvars(delivery=entry.fields[b"n"].decode())

    async def batch(entries: list[StreamEntry]) -> list[bool]:
        structlog.contextvars.bind_contextvars(delivery="batch")
        return [False] * len(entries)  # left to the one-by-one handler

    single = runner(redis, topology, handler)
    await add(redis, topology, 1, 2)
    assert await single.drain() == 2
    assert structlog.contextvars.get_contextvars() == {}
    batched = runner(redis, topology, handler, consumer="c2")
    batched.group = "batched"
    batched.batch_handler = batch
    assert await batched.drain() == 2
    assert structlog.contextvars.get_contextvars() == {}


async def test_one_correlation_chain_from_webhook_to_reply(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The delivery id leads to the message id (persist's line), the message id to the turn
    (the turns worker's line), the turn to the reply's ref (deliver's lines)."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # past any debounce window
    with capture_logs(processors=MERGED) as logs:
        [entry_id] = await feed(redis, topology, "message_created__whatsapp_incoming_phone")
        await persist_runner(redis, store, topology).drain()
        await TurnEmitter(store, redis, topology, clock=lambda: later).drain()
        [(_, fields)] = await xrange(redis, topology.key("turns"))
        turn = events.decode(events.TurnEntry, fields)
        await reply(redis, topology, conversation=turn.conversation, ref="the-reply",
                    turn=turn.turn)  # fmt: skip
        await deliver_runner(redis, store, topology, client).runner.drain()
    [stored] = [line for line in logs if line["event"] == "event.persisted"]
    assert stored["entry"] == entry_id and stored["delivery"] and stored["message"] == 918310
    [emitted] = [line for line in logs if line["event"] == "turn.emitted"]
    assert emitted["message"] == 918310 and emitted["turn"] == turn.turn
    [sent] = [line for line in logs if line["event"] == "reply.sent"]
    assert sent["turn"] == turn.turn and sent["ref"] == "the-reply"
