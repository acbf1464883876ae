"""The effect of automation-rule, macro, typing and agent-bot conversation events, through the
real Persister on real Redis and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from consumers.store import Store
from ingress import automation, events
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import emit_turns, persist, persist_runner, rows, xadd

CONVERSATION = "SELECT * FROM conversations ORDER BY chatwoot_conversation_id"
AUDIT = "SELECT source, signed, outcome, detail FROM webhook_events ORDER BY stream_id"


async def feed_automation(
    redis: aioredis.Redis, store: Store, topology: Topology, *payloads: dict[str, Any] | str
) -> None:
    """Publish as the ingress's automation path does (unsigned, business key), then persist."""
    for item in payloads:
        data = chatwoot.payload(item) if isinstance(item, str) else item
        body = chatwoot.rails_json(data)
        entry = events.EventEntry(
            source=automation.SOURCE,
            event=data["event"],
            delivery=automation.business_key(body, event=data["event"], account=3),
            account=3,
            conversation=data.get("id"),
            received_at=int(time.time() * 1000),
            signed=False,
            body=body,
        )
        await xadd(redis, topology.key("events"), events.encode(entry))
    await persist_runner(redis, store, topology).drain()


async def test_an_automation_snapshot_is_applied(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """automation_event.conversation_updated upserts the conversation it carries, with the
    signals of its state (assigned to a human), audited as source=automation, unsigned."""
    name = "automation_event.conversation_updated__assignee_team"
    await feed_automation(redis, store, topology, name)
    [conv] = await rows(store, CONVERSATION)
    assert (conv["chatwoot_conversation_id"], conv["status"], conv["assignee_type"]) == (
        1043,
        "open",
        "User",
    )
    assert (conv["labels"], conv["team_id"], conv["handler"]) == (["billing", "vat"], 2, "human")
    [audit] = await rows(store, AUDIT)
    assert audit == {
        "source": "automation",
        "signed": False,
        "outcome": "applied",
        "detail": "snapshot from an automation rule",
    }


async def test_a_macro_snapshot_moves_the_conversation_forward_only(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """macro.executed applies its newer snapshot (the label it added); an older snapshot
    arriving after it changes nothing."""
    await persist(redis, store, topology, "conversation_created__webwidget")
    macro = chatwoot.payload("macro.executed__assign_and_label")
    macro["id"] = 1042
    older = chatwoot.payload("automation_event.conversation_created__webwidget")
    await feed_automation(redis, store, topology, macro, older)
    [conv] = await rows(store, CONVERSATION)
    assert (conv["labels"], conv["assignee_type"], conv["version"]) == (
        ["billing", "vat", "vip"],
        "User",
        macro["updated_at"],
    )


async def test_automation_message_created_applies_the_conversation_not_a_message(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The rule's payload is the conversation: it is upserted; no message is made up from it,
    and no turn; the message's own message_created then stores it once and makes the turn."""
    await feed_automation(redis, store, topology, "automation_event.message_created__whatsapp")
    [conv] = await rows(store, CONVERSATION)
    assert (conv["chatwoot_conversation_id"], conv["identity"]) == (1044, "phone:+919876543210")
    assert await rows(store, "SELECT 1 FROM messages") == []
    assert await emit_turns(redis, store, topology) == []
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    assert len(await rows(store, "SELECT 1 FROM messages")) == 1
    assert len(await emit_turns(redis, store, topology)) == 1


async def test_an_unknown_automation_event_is_ignored_with_its_name(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An automation event Switchboard has no effect for is recorded, not dead-lettered."""
    data = {"event": "automation_event.task_created", "task": {"id": 5}, "account_id": 3}
    await feed_automation(redis, store, topology, data)
    [audit] = await rows(store, AUDIT)
    assert (audit["outcome"], audit["detail"]) == (
        "ignored",
        "no effect for automation_event.task_created: its payload is not a conversation",
    )
    assert await rows(store, CONVERSATION) == []


async def test_typing_off_applies_its_conversation_snapshot(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """conversation_typing_off stores no message; the conversation inside is upserted."""
    await persist(redis, store, topology, "conversation_typing_off__agent")
    [conv] = await rows(store, CONVERSATION)
    assert (conv["chatwoot_conversation_id"], conv["assignee_type"]) == (1042, "User")
    assert await rows(store, "SELECT 1 FROM messages") == []


async def test_agent_bot_resolved_returns_and_opened_hands_off(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """conversation_resolved (agent-bot name) gives the conversation back to the bot;
    conversation_opened later is the hand-off to humans, by itself (no human assigned)."""
    await persist(redis, store, topology, "conversation_resolved__agent_bot")
    [conv] = await rows(store, CONVERSATION)
    assert (conv["status"], conv["handler"]) == ("resolved", "bot")
    opened = chatwoot.payload("conversation_opened__agent_bot")
    opened["meta"]["assignee"] = opened["meta"]["assignee_type"] = None
    await persist(redis, store, topology, opened)
    [conv] = await rows(store, CONVERSATION)
    assert (conv["status"], conv["handler"]) == ("open", "human")


async def test_a_customer_message_from_the_automation_path_is_ignored(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An entry of source=automation that is not `automation_event.*`/`macro.executed` (a
    forged customer message) is audited `ignored` with the reason: no message, no turn."""
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    await feed_automation(redis, store, topology, data)
    [audit] = await rows(store, AUDIT)
    assert (audit["source"], audit["outcome"]) == ("automation", "ignored")
    assert "not taken from the automation path" in audit["detail"]
    assert await rows(store, "SELECT * FROM messages") == []
    assert await emit_turns(redis, store, topology) == []


async def test_a_snapshot_dated_far_ahead_is_ignored(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An automation snapshot whose `updated_at` is hours after its receive time is ignored,
    saying why, and does not stand against the real changes that follow."""
    name = "automation_event.conversation_updated__assignee_team"
    future = chatwoot.payload(name)
    future["updated_at"] = time.time() + 10 * 365 * 86400
    future["status"] = "resolved"
    await feed_automation(redis, store, topology, future)
    [audit] = await rows(store, AUDIT)
    assert audit["outcome"] == "ignored" and "after its receive time" in audit["detail"]
    assert await rows(store, CONVERSATION) == []
    now = chatwoot.payload(name)
    now["updated_at"] = time.time()
    await feed_automation(redis, store, topology, now)
    [conv] = await rows(store, CONVERSATION)
    assert (conv["status"], conv["version"]) == ("open", now["updated_at"])


async def test_a_signed_snapshot_dated_far_ahead_is_ignored_too(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The same bound holds for signed conversation webhooks."""
    data = chatwoot.payload("conversation_status_changed__resolved")
    data["updated_at"] = time.time() + 3600
    await persist(redis, store, topology, data)
    [audit] = await rows(store, AUDIT)
    assert audit["outcome"] == "ignored" and "after its receive time" in audit["detail"]
    assert await rows(store, CONVERSATION) == []
