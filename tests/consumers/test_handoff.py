"""Issue 13's story through the persist group and the turns worker, on real Redis and
PostgreSQL: a human takes a WhatsApp conversation and resolves it; the customer writes again
and stock Chatwoot reopens it `pending` with the human still assigned. The bot answers,
whichever order the reopen's webhooks arrive in."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.store import Store
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import emit_turns, persist, rows

CREATED = 1781775787.0  # conversation 1044's created_at in the fixtures
HUMAN = {"id": 7, "name": "Priya Nair", "email": "priya@acme.test", "type": "user"}


def snapshot(status: str, human: bool, t: float) -> dict[str, Any]:
    """Conversation 1044 as Chatwoot renders it at CREATED + t."""
    conversation: dict[str, Any] = chatwoot.payload("message_created__whatsapp_incoming_phone")[
        "conversation"
    ]
    conversation.update(status=status, updated_at=CREATED + t, messages=[])
    conversation["meta"].update(assignee=HUMAN if human else None,
                                assignee_type="User" if human else None)  # fmt: skip
    return conversation


def message(
    message_id: int, conversation: dict[str, Any], *, human: bool = False
) -> dict[str, Any]:
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    at = dt.datetime.fromtimestamp(conversation["updated_at"], dt.UTC).isoformat()
    data.update(id=message_id, content=f"message {message_id}", created_at=at,
                conversation=conversation)  # fmt: skip
    if human:
        data.update(message_type="outgoing", sender=HUMAN)
    return data


def status_events(conversation: dict[str, Any], before: str) -> list[dict[str, Any]]:
    """A status change as Chatwoot sends it: two webhooks, only one of them with the change."""
    change = {"status": {"previous_value": before, "current_value": conversation["status"]}}
    return [
        {**conversation, "event": "conversation_status_changed", "changed_attributes": None},
        {**conversation, "event": "conversation_updated", "changed_attributes": [change]},
    ]


async def handled_and_resolved(redis: aioredis.Redis, store: Store, topology: Topology) -> None:
    taken = snapshot("open", True, 10)
    assignment = {"assignee_id": {"previous_value": None, "current_value": 7}}
    await persist(redis, store, topology, message(918310, snapshot("pending", False, 0)))
    assert len(await emit_turns(redis, store, topology)) == 1  # the bot answered it
    await persist(
        redis, store, topology,
        {**taken, "event": "conversation_updated", "changed_attributes": [
            assignment, {"status": {"previous_value": "pending", "current_value": "open"}}]},
        message(918311, snapshot("open", True, 15), human=True),
        *status_events(snapshot("resolved", True, 30), "open"),
    )  # fmt: skip


REOPEN = [
    *status_events(snapshot("pending", True, 40), "resolved"),
    message(918340, snapshot("pending", True, 40.5)),  # the customer's, shown a bit later
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_reopened_pending_with_the_human_is_answered_by_the_bot(
    order: tuple[int, ...], redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The human's assignment is not re-dated by the snapshots that repeat it: the move into
    `pending` (and the resolve before it) give the conversation back to the bot."""
    await handled_and_resolved(redis, store, topology)
    await persist(redis, store, topology, *[REOPEN[i] for i in order])
    [conversation] = await rows(store, "SELECT status, assignee_type, handler FROM conversations")
    assert conversation == {"status": "pending", "assignee_type": "User", "handler": "bot"}
    turns = await emit_turns(redis, store, topology)
    assert len(turns) == 2 and turns[-1].messages[-1].id == 918340  # a turn for the reopen


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_without_return_on_resolve_the_reopen_answers_a_message_that_came_first(
    order: tuple[int, ...], redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """`return_on_resolve: false`: the resolved conversation stays the human's until the move
    into `pending`; a customer message stored before that move (skipped then) gets its turn
    when the move gives the conversation to the bot, in every arrival order."""
    routes = tuple(msgspec.structs.replace(r, return_on_resolve=False) for r in topology.routes)
    topology = msgspec.structs.replace(topology, routes=routes)
    await handled_and_resolved(redis, store, topology)
    await persist(redis, store, topology, *[REOPEN[i] for i in order])
    [conversation] = await rows(store, "SELECT handler FROM conversations")
    assert conversation["handler"] == "bot"
    turns = await emit_turns(redis, store, topology)
    assert len(turns) == 2 and [m.id for m in turns[-1].messages] == [918340]


async def test_a_human_reply_after_the_reopen_takes_it_again(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The reopen is dated, not sticky: the human answering afterwards has it back."""
    await handled_and_resolved(redis, store, topology)
    await persist(redis, store, topology, *REOPEN)
    await persist(
        redis, store, topology, message(918341, snapshot("pending", True, 50), human=True)
    )
    [conversation] = await rows(store, "SELECT handler FROM conversations")
    assert conversation["handler"] == "human"
