"""No customer left unanswered: an overdue turn is handed to humans once, on real Redis and
PostgreSQL, with the fake Chatwoot server; every clock is injected."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.chatwoot import ChatwootClient
from consumers.store import Store
from consumers.turns import TurnEmitter
from consumers.unanswered import BEHIND_MAX, BEHIND_WAIT, Unanswered
from ingress.settings import Secret
from ingress.topology import Topology
from tests import chatwoot
from tests.conftest import BOT_TOKEN, Fake
from tests.consumers.test_deliver import Delivery, reply
from tests.pipeline import persist, rows

CONVERSATION = "/api/v1/accounts/3/conversations/1044"
TURN = "3:1044:918310"  # the turn of message_created__whatsapp_incoming_phone
# Ahead of the wall clock for the whole session (a turn stored now is due by T0), however
# long the suite runs before these tests.
T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)


@pytest.fixture
async def client(fake: Fake) -> AsyncIterator[ChatwootClient]:
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), timeout=1.0) as c:
        yield c


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def worker(store: Store, redis: aioredis.Redis, topology: Topology, s: float) -> Unanswered:
    return Unanswered(store, redis, topology, clock=lambda: at(s))


def with_turns(topology: Topology, **turns: Any) -> Topology:
    return msgspec.structs.replace(topology, turns=msgspec.structs.replace(topology.turns, **turns))


async def turn_emitted(redis: aioredis.Redis, store: Store, topology: Topology) -> None:
    """The customer writes; their turn leaves for the agent at T0."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    assert await TurnEmitter(store, redis, topology, clock=lambda: T0).drain() == 1


async def handoff_rows(store: Store) -> list[dict[str, Any]]:
    return await rows(
        store,
        "SELECT ref, kind, private, content, status FROM outbound "
        "WHERE ref LIKE '%:unanswered:%' ORDER BY ref",
    )


async def conversation(store: Store) -> dict[str, Any]:
    [row] = await rows(
        store,
        "SELECT handler, answer_due_at, answer_holds FROM conversations "
        "WHERE chatwoot_conversation_id = 1044",
    )
    return row


async def metric(redis: aioredis.Redis, topology: Topology) -> int:
    value = await redis.hget(topology.key("metrics"), "turns.unanswered_handoffs")
    return int(value or 0)


async def test_an_unanswered_turn_is_handed_to_humans_once_by_racing_workers(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Three workers racing past the deadline hand the conversation over once: one private
    note and one toggle to `open` at Chatwoot, the bot stops, the metric counts one."""
    await turn_emitted(redis, store, topology)
    assert (await conversation(store))["answer_due_at"] == at(120)
    assert await worker(store, redis, topology, 119).drain() == 0  # not due yet
    racers = [Unanswered(store, redis, topology, clock=lambda: at(121), batch=1)
              for _ in range(3)]  # fmt: skip
    assert sum(await asyncio.gather(*(w.drain() for w in racers))) == 1
    note = "Switchboard: the bot did not answer within 120 s; handing over to a human."
    assert await handoff_rows(store) == [
        {"ref": f"{TURN}:unanswered:handoff", "kind": "handoff", "private": False,
         "content": "", "status": "queued"},
        {"ref": f"{TURN}:unanswered:note", "kind": "message", "private": True,
         "content": note, "status": "queued"},
    ]  # fmt: skip
    conv = await conversation(store)
    assert conv["handler"] == "human" and conv["answer_due_at"] is None
    assert await metric(redis, topology) == 1

    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(122)
    await delivery.drain()
    await delivery.drain()
    sent = [(r["path"], r["json"]) for r in fake.requests() if r["method"] == "POST"]
    assert sorted(sent, key=str) == sorted(
        [
            (f"{CONVERSATION}/toggle_status", {"status": "open"}),
            (f"{CONVERSATION}/messages", {
                "content": note, "message_type": "outgoing", "private": True,
                "content_type": "text",
                "content_attributes": {"ext_ref": f"{TURN}:unanswered:note"},
            }),
        ],
        key=str,
    )  # fmt: skip
    assert {r["status"] for r in await handoff_rows(store)} == {"sent"}
    assert await worker(store, redis, topology, 1000).drain() == 0  # nothing left due


async def test_an_answered_turn_is_not_handed_off(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A reply to the turn posted in time clears the deadline: no hand-off, ever."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(60)
    await delivery.drain()
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, topology, 10_000).drain() == 0
    assert await handoff_rows(store) == []
    assert (await conversation(store))["handler"] == "bot"


async def test_a_reply_without_turn_clears_the_deadline(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """`turn` is optional on sb:outbound: a public bot message without it answers what was
    awaited when it was queued, so posting it clears the deadline: no hand-off."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, ref="answer-no-turn")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(60)
    await delivery.drain()
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'answer-no-turn'")
    assert row["status"] == "sent"
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, topology, 10_000).drain() == 0
    assert await handoff_rows(store) == []
    assert (await conversation(store))["handler"] == "bot"


async def test_a_reply_without_turn_on_its_way_postpones_the_handoff(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A reply without `turn` waiting for its retry counts as one on its way."""
    await turn_emitted(redis, store, topology)
    fake.faults({"path": "messages", "status": 503, "times": 1})
    await reply(redis, topology, conversation=1044, ref="answer-no-turn")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(60)
    await delivery.runner.drain()
    assert await worker(store, redis, topology, 121).drain() == 1
    assert await handoff_rows(store) == []
    assert (await conversation(store))["answer_due_at"] == at(241)


async def test_a_reply_without_turn_during_the_debounce_leaves_the_question_its_turn(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A business system's notice (no `turn`) posted while the customer's burst still
    debounces answers nothing the agent was given: the question still gets its turn."""
    topology = with_turns(topology, debounce_ms=2000)
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    await reply(redis, topology, conversation=1044, ref="order-shipped", content="Shipped")
    await Delivery(redis, store, topology, client).drain()
    [row] = await rows(store, "SELECT status, covers_through FROM outbound")
    assert row == {"status": "sent", "covers_through": 0}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    assert await TurnEmitter(store, redis, topology, clock=lambda: later).drain() == 1
    turns = {topology.key(route.stream) for route in topology.routes}
    assert sum([await redis.xlen(key) for key in turns]) == 1


@pytest.mark.parametrize("kind", ["hold", "typing_on"])
async def test_hold_and_typing_on_push_the_deadline(
    kind: str,
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
) -> None:
    """An agent's `hold` or `typing_on` at 100 s moves the deadline to 220 s; a `hold` sends
    nothing to Chatwoot."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, kind=kind, content="", ref="still-here")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(100)
    await delivery.drain()
    conv = await conversation(store)
    assert conv["answer_due_at"] == at(220) and conv["answer_holds"] == 1
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'still-here'")
    assert row["status"] == "sent"
    toggles = [r for r in fake.requests() if r["method"] == "POST"]
    assert len(toggles) == (0 if kind == "hold" else 1)
    assert await worker(store, redis, topology, 130).drain() == 0
    assert await worker(store, redis, topology, 221).drain() == 1
    assert len(await handoff_rows(store)) == 2


async def test_holds_are_capped(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Past `max_holds` extensions a `hold` moves the deadline no further: a stuck agent
    cannot keep the customer waiting forever."""
    capped = with_turns(topology, max_holds=2)
    await turn_emitted(redis, store, capped)
    delivery = Delivery(redis, store, capped, client)
    for n, second in enumerate((100, 200, 300)):
        await reply(redis, capped, conversation=1044, kind="hold", ref=f"hold-{n}")
        delivery.clock.at = at(second)
        await delivery.drain()
    conv = await conversation(store)
    assert conv["answer_due_at"] == at(320) and conv["answer_holds"] == 2  # not 420
    assert await worker(store, redis, capped, 321).drain() == 1


async def test_zero_turns_the_deadline_off(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """`answer_within_s: 0` sets no deadline: nobody is handed over, however long it waits."""
    off = with_turns(topology, answer_within_s=0)
    await turn_emitted(redis, store, off)
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, off, 86_400).drain() == 0
    assert await handoff_rows(store) == []


async def test_the_route_sets_the_deadline(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A route's own `answer_within_s` wins over the `turns:` default."""
    route = msgspec.structs.replace(topology.routes[0], answer_within_s=30)
    routed = msgspec.structs.replace(topology, routes=(route,))
    await turn_emitted(redis, store, routed)
    assert (await conversation(store))["answer_due_at"] == at(30)
    assert await worker(store, redis, routed, 31).drain() == 1
    [_, note] = await handoff_rows(store)
    assert "within 30 s" in note["content"]


async def test_a_human_taking_over_clears_the_deadline(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A human agent answers before the deadline: nothing is handed over, and the deadline
    is gone once it passes."""
    await turn_emitted(redis, store, topology)
    await persist(redis, store, topology, "message_created__outgoing_agent_user")
    conv = await conversation(store)
    assert conv["handler"] == "human" and conv["answer_due_at"] is None
    assert await worker(store, redis, topology, 121).drain() == 0
    assert await handoff_rows(store) == []
    assert await metric(redis, topology) == 0


async def test_a_deadline_overtaken_by_a_human_is_not_acted_on(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A deadline still set when its conversation is found human-handled (a takeover that
    did not clear it) is cleared by the worker, not acted on."""
    await turn_emitted(redis, store, topology)
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE conversations SET handler = 'human'")
    assert await worker(store, redis, topology, 121).drain() == 1  # due, and settled
    assert await handoff_rows(store) == []
    assert (await conversation(store))["answer_due_at"] is None
    assert await metric(redis, topology) == 0


async def test_an_agent_resolving_the_conversation_settles_its_turn(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """An agent's `resolve` is its answer to the turn: no hand-off afterwards."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, kind="resolve", content="", ref="done")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(30)
    await delivery.drain()
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, topology, 121).drain() == 0


async def test_a_late_bot_reply_after_the_handoff_is_suppressed(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The agent's reply that arrives after the hand-off is not posted: a human has it."""
    await turn_emitted(redis, store, topology)
    assert await worker(store, redis, topology, 121).drain() == 1
    await reply(redis, topology, conversation=1044, turn=TURN, ref="too-late")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(125)
    await delivery.drain()
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'too-late'")
    assert row["status"] == "suppressed"
    public = [r for r in fake.requests() if r["json"] and r["json"].get("private") is False]
    assert public == []


async def test_a_customer_writing_again_does_not_push_the_deadline_back(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A newer turn to a silent bot keeps the first turn's deadline, and the hand-off covers
    the newest message."""
    await turn_emitted(redis, store, topology)
    again = chatwoot.payload("message_created__whatsapp_incoming_phone")
    again["id"] += 10
    await persist(redis, store, topology, again)
    assert await TurnEmitter(store, redis, topology, clock=lambda: at(60)).drain() == 1
    [row] = await rows(store, "SELECT answer_due_at, answer_through FROM conversations")
    assert row == {"answer_due_at": at(120), "answer_through": again["id"]}
    assert await worker(store, redis, topology, 121).drain() == 1
    refs = [r["ref"] for r in await handoff_rows(store)]
    turn = f"3:1044:{again['id']}"
    assert refs == [f"{turn}:unanswered:handoff", f"{turn}:unanswered:note"]


async def test_a_reply_on_its_way_postpones_the_handoff(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The agent answered in time but Chatwoot has not taken the reply yet (a 503): no
    hand-off at the deadline, a look again one window later, and once it is posted, none."""
    await turn_emitted(redis, store, topology)
    fake.faults({"path": "messages", "status": 503, "times": 1})
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(60)
    await delivery.runner.drain()  # the first attempt fails: the reply waits for its retry
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'answer'")
    assert row["status"] == "sending"
    assert await worker(store, redis, topology, 121).drain() == 1
    assert await handoff_rows(store) == []
    assert (await conversation(store))["answer_due_at"] == at(241)
    delivery.clock.at = at(130)
    await delivery.retrier.drain()
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, topology, 10_000).drain() == 0
    assert await handoff_rows(store) == []


async def test_a_reply_still_in_the_outbound_stream_postpones_the_handoff(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The agent's reply waits unread in sb:outbound (deliver behind or restarting) past the
    deadline: the hand-off waits for deliver, which then posts the reply; no hand-off."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer")
    assert await worker(store, redis, topology, 121).drain() == 1
    assert await handoff_rows(store) == []
    assert (await conversation(store))["answer_due_at"] == at(131)
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(125)
    await delivery.drain()
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'answer'")
    assert row["status"] == "sent"
    assert (await conversation(store))["answer_due_at"] is None
    assert await worker(store, redis, topology, 10_000).drain() == 0
    assert await handoff_rows(store) == []


async def test_a_postponed_turn_answered_meanwhile_is_forgotten(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A hand-off postponed for a deliver group behind, then answered: the worker keeps no
    trace of it (a long-running worker's memory stays bounded by the turns overdue at once)."""
    now = [121.0]
    unanswered = Unanswered(store, redis, topology, clock=lambda: at(now[0]))
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer")
    assert await unanswered.drain() == 1  # deliver behind: postponed
    assert len(unanswered.behind_waits) == 1
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(125)
    await delivery.drain()
    assert (await conversation(store))["answer_due_at"] is None
    now[0] = 10_000
    assert await unanswered.drain() == 0
    assert await handoff_rows(store) == []
    assert unanswered.behind_waits == {}


async def test_a_deliver_group_that_never_catches_up_delays_the_handoff_boundedly(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Deliver behind for good: the hand-off waits BEHIND_MAX times BEHIND_WAIT, then goes."""
    await turn_emitted(redis, store, topology)
    await reply(redis, topology, conversation=1044, ref="someone-else", content="x")
    now = [121.0]
    unanswered = Unanswered(store, redis, topology, clock=lambda: at(now[0]))
    for _ in range(BEHIND_MAX):
        assert await unanswered.drain() == 1
        assert await handoff_rows(store) == []
        now[0] += BEHIND_WAIT.total_seconds()
        assert (await conversation(store))["answer_due_at"] == at(now[0])
    assert await unanswered.drain() == 1
    assert len(await handoff_rows(store)) == 2


async def test_a_reply_that_failed_for_good_leaves_the_customer_to_humans(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A reply Chatwoot refused for good answered nobody: the hand-off goes ahead."""
    await turn_emitted(redis, store, topology)
    fake.faults({"path": "messages", "status": 422, "times": 1})
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(60)
    await delivery.runner.drain()
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'answer'")
    assert row["status"] == "failed"
    assert await worker(store, redis, topology, 121).drain() == 1
    assert len(await handoff_rows(store)) == 2


async def test_an_ended_conversation_with_an_unanswered_turn_is_still_handed_over(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The customer started a newer conversation while their turn waited: the old one is no
    longer active, but what they wrote there was never answered, so it goes to humans."""
    await turn_emitted(redis, store, topology)
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE conversations SET active = false, ended_at = now()")
    assert await worker(store, redis, topology, 121).drain() == 1
    assert len(await handoff_rows(store)) == 2
    assert (await conversation(store))["handler"] == "human"


async def test_a_reply_to_an_earlier_turn_restarts_the_deadline_of_the_next(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """`superseded: deliver`: the bot answers turn 1 at 110 s while turn 2 (sent at 101 s)
    waits: what is still awaited is due `answer_within_s` after that reply, not at 120 s."""
    routes = tuple(msgspec.structs.replace(r, superseded="deliver") for r in topology.routes)
    topology = msgspec.structs.replace(topology, routes=routes)
    await turn_emitted(redis, store, topology)
    again = chatwoot.payload("message_created__whatsapp_incoming_phone")
    again["id"] += 10
    await persist(redis, store, topology, again)
    assert await TurnEmitter(store, redis, topology, clock=lambda: at(101)).drain() == 1
    await reply(redis, topology, conversation=1044, turn=TURN, ref="answer-1")
    delivery = Delivery(redis, store, topology, client)
    delivery.clock.at = at(110)
    await delivery.drain()
    assert (await conversation(store))["answer_due_at"] == at(230)
    await worker(store, redis, topology, 121).drain()
    assert await handoff_rows(store) == []
    assert await worker(store, redis, topology, 231).drain() == 1
    assert len(await handoff_rows(store)) == 2
