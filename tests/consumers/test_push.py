"""The push group in-process: real Redis and PostgreSQL, the apps faked with MockTransport."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from consumers import egress, push, signing
from consumers.appclient import AppClient
from consumers.dlq import Outcome, Replayer, Selection, select
from consumers.runner import Runner
from consumers.store import Store
from consumers.store.apps import AppSQL
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Route, Topology
from tests.pipeline import persist, xrange

SECRET = signing.new_secret(bytes(range(32)))
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # past any debounce

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def public(host: str, port: int) -> Sequence[str]:
    return ["93.184.215.14"]


@pytest.fixture
def routed(topology: Topology) -> Topology:
    route = Route(name="default", stream="turns", app="bot")
    return msgspec.structs.replace(topology, routes=(route,))


@pytest.fixture
async def apps(store: Store) -> AsyncIterator[Store]:
    async with store.transaction() as tx:
        await tx.conn.execute("TRUNCATE worker_apps, pushes, push_attempts")
        sql = AppSQL(tx.conn)
        for name in ("bot", "other"):
            await sql.add_app(name, f"https://{name}.example/turns", SECRET, timeout_s=2,
                              enabled=True)  # fmt: skip
    yield store


class Rig:
    def __init__(
        self, redis: aioredis.Redis, store: Store, topology: Topology, handler: Handler
    ) -> None:
        self.redis, self.store, self.topology = redis, store, topology
        self.clock = Clock()
        self.requests: list[httpx.Request] = []

        async def recorded(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return await handler(request)

        transport = httpx.MockTransport(recorded)
        self.client = AppClient(policy=egress.Policy(), resolve=public, transport=transport)
        self.worker = push.PushWorker(store, redis, topology, self.client, clock=self.clock,
                                      rand=lambda: 0.5)  # fmt: skip
        key = topology.key("turns")
        self.runner = Runner(
            redis, key=key, group="push", spec=topology.groups["push"],
            dead_key=topology.key("dead"), consumer="test-push",
            handler=push.Pusher(store, topology, stream=key, clock=self.clock),
        )  # fmt: skip

    async def turn(self, fixture: str = "message_created__whatsapp_incoming_phone") -> str:
        """Persist a customer message, emit its turn, record its push; the turn id."""
        await persist(self.redis, self.store, self.topology, fixture)
        await TurnEmitter(self.store, self.redis, self.topology, clock=self.clock).drain()
        await self.runner.drain()
        turns = await xrange(self.redis, self.topology.key("turns"))
        return turns[-1][1][b"turn"].decode()

    async def replies(self) -> list[events.OutboundEntry]:
        found = await xrange(self.redis, self.topology.key("outbound"))
        return [events.decode(events.OutboundEntry, fields) for _, fields in found]

    async def dead(self) -> list[events.DeadEntry]:
        found = await xrange(self.redis, self.topology.key("dead"))
        return [events.decode(events.DeadEntry, fields) for _, fields in found]

    async def row(self, turn: str) -> dict[str, Any]:
        async with self.store.pool.acquire() as conn:
            record = await conn.fetchrow("SELECT * FROM pushes WHERE turn = $1", turn)
        assert record is not None
        return dict(record)

    async def attempts(self, turn: str) -> list[tuple[str, int | None]]:
        async with self.store.pool.acquire() as conn:
            records = await conn.fetch(
                "SELECT outcome, http_status FROM push_attempts WHERE turn = $1 ORDER BY id", turn
            )
        return [(r["outcome"], r["http_status"]) for r in records]


def answers(*responses: httpx.Response) -> Handler:
    queue = list(responses)

    async def handler(request: httpx.Request) -> httpx.Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


INLINE = httpx.Response(200, json={"replies": [{"content": "Hello!"}]})


async def test_an_app_failing_twice_then_answering_inline_gives_one_reply(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """500, 503, then 200 with a reply: one reply on sb:outbound, its ref from the turn, and
    each attempt in the audit trail; every attempt carries the same webhook-id, signed."""
    rig = Rig(redis, apps, routed, answers(httpx.Response(500), httpx.Response(503), INLINE))
    turn = await rig.turn()
    for _ in range(3):
        await rig.worker.drain()
        rig.clock.advance(600)
    [reply] = await rig.replies()
    assert (reply.ref, reply.turn, reply.content) == (f"{turn}:0", turn, "Hello!")
    assert reply.account == 3 and reply.conversation == int(turn.split(":")[1])
    assert await rig.attempts(turn) == [("retry", 500), ("retry", 503), ("answered", 200)]
    row = await rig.row(turn)
    assert (row["status"], row["attempts"], row["replies"]) == ("answered", 3, 1)
    assert {r.headers["webhook-id"] for r in rig.requests} == {turn}
    for request in rig.requests:
        assert signing.verify([SECRET], request.headers, request.content,
                              now=int(request.headers["webhook-timestamp"]))  # fmt: skip
    body = msgspec.json.decode(rig.requests[0].content)
    assert body["turn"] == turn and body["messages"][0]["content"]


async def test_a_retry_waits_its_backoff(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """After a failure the push is not tried again before its delay (Retry-After here)."""
    limited = httpx.Response(429, headers={"retry-after": "120"})
    rig = Rig(redis, apps, routed, answers(limited, INLINE))
    turn = await rig.turn()
    await rig.worker.drain()
    rig.clock.advance(100)
    await rig.worker.drain()
    assert len(rig.requests) == 1
    rig.clock.advance(30)
    await rig.worker.drain()
    assert len(rig.requests) == 2 and (await rig.row(turn))["status"] == "answered"


async def test_a_superseded_turn_is_not_pushed(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """A newer turn of the conversation left before the push: the older one is never sent."""
    rig = Rig(redis, apps, routed, answers(INLINE))
    first = await rig.turn()
    async with apps.pool.acquire() as conn:
        # What the turns worker records when it emits the conversation's next turn.
        await conn.execute("UPDATE conversations SET emitted_through = emitted_through + 1")
    await rig.worker.drain()
    assert rig.requests == []
    assert (await rig.row(first))["status"] == "superseded"


async def test_a_bad_reply_is_dead_lettered_and_the_others_go_out(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """One reply without content, one naming another account, one good: one reply out,
    two clear dead letters."""
    answer = httpx.Response(200, json={"replies": [
        {"content": ""}, {"content": "x", "account": 99}, {"content": "ok", "ref": "mine-1"},
    ]})  # fmt: skip
    rig = Rig(redis, apps, routed, answers(answer))
    turn = await rig.turn()
    await rig.worker.drain()
    [reply] = await rig.replies()
    assert reply.ref == "mine-1" and reply.turn == turn
    dead = await rig.dead()
    assert [d.reason for d in dead] == ["bad_reply", "bad_reply"]
    assert "reply 0" in dead[0].error and "another account" in dead[1].error
    assert (await rig.row(turn))["replies"] == 1


async def test_a_refused_push_is_dead_lettered_and_replayable(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """404: failed at once, dead-lettered; `dlq replay` queues it again, and it answers."""
    rig = Rig(redis, apps, routed, answers(httpx.Response(404), INLINE))
    turn = await rig.turn()
    await rig.worker.drain()
    [dead] = await rig.dead()
    assert (dead.group, dead.reason, dead.original["turn"].decode()) == ("push", "permanent", turn)
    assert (await rig.row(turn))["status"] == "failed"
    replayer = Replayer(redis, apps, routed)
    async for entry_id, letter in select(redis, routed, Selection()):
        done = await replayer.replay(entry_id, letter)
        assert done.outcome is Outcome.REQUEUED
    await rig.worker.drain()
    assert (await rig.row(turn))["status"] == "answered"
    assert [r.ref for r in await rig.replies()] == [f"{turn}:0"]
    assert await rig.dead() == []


async def test_a_slow_app_holds_up_no_other(
    redis: aioredis.Redis, apps: Store, routed: Topology
) -> None:
    """While one app takes its time, another's push is answered."""
    slow_started = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "bot.example":
            slow_started.set()
            await asyncio.sleep(1.5)
        return INLINE

    two = (Route(name="a", inbox=None, account=None, app="bot", channel="Channel::Whatsapp"),
           Route(name="b", app="other"))  # fmt: skip
    topology = msgspec.structs.replace(routed, routes=two)
    rig = Rig(redis, apps, topology, handler)
    slow = await rig.turn("message_created__whatsapp_incoming_phone")
    fast = await rig.turn("message_created__telegram_incoming")
    await rig.worker.step()
    await slow_started.wait()
    for _ in range(50):
        if (await rig.row(fast))["status"] == "answered":
            break
        await asyncio.sleep(0.02)
    assert (await rig.row(fast))["status"] == "answered"
    assert (await rig.row(slow))["status"] == "pushing"
    await rig.worker.drain()
    assert (await rig.row(slow))["status"] == "answered"


async def test_a_turn_of_a_route_without_app_is_not_pushed(
    redis: aioredis.Redis, apps: Store, topology: Topology
) -> None:
    """The push group acknowledges the turns meant for agents reading the stream."""
    rig = Rig(redis, apps, topology, answers(INLINE))
    await rig.turn()
    await rig.worker.drain()
    assert rig.requests == []
    async with apps.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pushes") == 0
