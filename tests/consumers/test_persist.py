"""The persist group on real Redis and PostgreSQL: every fixture's effect, once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.persist import IGNORED, SNAPSHOTS, Persister
from consumers.store import Store
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Route, Topology
from tests import chatwoot
from tests.pipeline import emit_turns, feed, persist, persist_runner, rows, xrange

TYPING = "typing indicator: its conversation snapshot"
EXPECTED_OUTCOME = {
    "conversation_typing_on__agent": ("applied", TYPING),
    "conversation_typing_off__agent": ("applied", TYPING),
    "webwidget_triggered__widget_opened": ("ignored", IGNORED["webwidget_triggered"]),
    **{
        name: ("applied", SNAPSHOTS[name.split("__")[0]])
        for name in chatwoot.webhook_names()
        if name.startswith(("automation_event.", "macro."))
    },
}


@pytest.mark.parametrize("name", chatwoot.webhook_names())
async def test_every_fixture_is_recorded_with_its_outcome(
    name: str, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Each webhook leaves one audit row, applied or ignored on purpose, never an error."""
    [entry_id] = await feed(redis, topology, name)
    await persist_runner(redis, store, topology).drain()
    [row] = await rows(store, "SELECT * FROM webhook_events")
    assert row["stream_id"] == entry_id
    assert (row["outcome"], row["detail"]) == EXPECTED_OUTCOME.get(name, ("applied", None))
    assert row["body"] == chatwoot.rails_json(chatwoot.payload(name))


@pytest.mark.parametrize(
    ("name", "direction", "sender_kind", "status", "private"),
    [
        ("message_created__webwidget_incoming_no_email", "inbound", "contact", "received", False),
        ("message_created__whatsapp_incoming_phone", "inbound", "contact", "received", False),
        ("message_created__incoming_with_attachments", "inbound", "contact", "received", False),
        ("message_created__outgoing_agent_user", "outbound", "user", "sent", False),
        ("message_created__private_note", "outbound", "user", "sent", True),
        ("message_created__template_auto_reply_no_sender", "outbound", "system", "sent", False),
        (
            "message_updated__outgoing_delivered_source_id_set",
            "outbound",
            "agent_bot",
            "delivered",
            False,
        ),
    ],
)
async def test_messages_are_stored_with_who_spoke(
    name: str,
    direction: str,
    sender_kind: str,
    status: str,
    private: bool,
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
) -> None:
    """A message row records direction, sender kind, status and privacy."""
    await persist(redis, store, topology, name)
    payload = chatwoot.payload(name)
    [row] = await rows(store, "SELECT * FROM messages")
    assert row["chatwoot_message_id"] == payload["id"]
    assert row["chatwoot_conversation_id"] == payload["conversation"]["id"]
    assert (row["direction"], row["sender_kind"], row["status"], row["private"]) == (
        direction,
        sender_kind,
        status,
        private,
    )
    assert row["content"] == payload["content"]


async def test_attachments_are_kept(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Attachment type and URL are stored with the message."""
    await persist(redis, store, topology, "message_created__incoming_with_attachments")
    [row] = await rows(store, "SELECT attachments::text AS a FROM messages")
    assert '"file_type": "image"' in row["a"] and "data_url" in row["a"]


async def test_duplicate_webhooks_store_one_message(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Chatwoot's duplicate sends (new delivery ids) store the message once and say so."""
    name = "message_created__whatsapp_incoming_phone"
    await persist(redis, store, topology, name, name, name)
    assert len(await rows(store, "SELECT 1 FROM messages")) == 1
    outcomes = [
        r["outcome"]
        for r in await rows(store, "SELECT outcome FROM webhook_events ORDER BY stream_id")
    ]
    assert outcomes == ["applied", "duplicate", "duplicate"]
    assert len(await emit_turns(redis, store, topology)) == 1


async def test_contact_and_conversation_rows(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An incoming message upserts its contact and its conversation with identity and channel."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    [contact] = await rows(store, "SELECT * FROM contacts")
    assert (contact["chatwoot_contact_id"], contact["phone"]) == (5503, "+919876543210")
    [conv] = await rows(store, "SELECT * FROM conversations")
    assert conv["chatwoot_conversation_id"] == 1044 and conv["account_id"] == 3
    assert (conv["channel"], conv["identity"], conv["status"]) == (
        "Channel::Whatsapp",
        "phone:+919876543210",
        "pending",
    )
    assert (conv["handler"], conv["active"]) == ("bot", True)


async def test_an_older_snapshot_never_overwrites_a_newer_one(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A late event carrying an older conversation `updated_at` changes nothing."""
    await persist(redis, store, topology, "conversation_status_changed__resolved")
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")  # older
    [conv] = await rows(store, "SELECT status, version FROM conversations")
    assert conv == {"status": "resolved", "version": 1781776572.612317}


async def test_customer_message_becomes_a_turn(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A public incoming message of a bot-handled conversation is emitted as a turn."""
    await persist(redis, store, topology, "message_created__webwidget_incoming_no_email")
    [turn] = await emit_turns(redis, store, topology)
    assert (turn.account, turn.conversation, turn.inbox, turn.through) == (3, 1042, 11, 918301)
    assert turn.turn == "3:1042:918301" and turn.route == "default"
    assert [m.content for m in turn.messages] == ["Hi, does the Pro plan include SSO?"]
    assert turn.channel == "Channel::WebWidget" and turn.contact == 5501
    assert await emit_turns(redis, store, topology) == [turn]  # emitted once


@pytest.mark.parametrize(
    "name",
    [
        "message_created__private_note",
        "message_created__outgoing_agent_bot_echo",
        "message_created__template_auto_reply_no_sender",
        "message_updated__outgoing_delivered_source_id_set",
        "conversation_created__webwidget",
    ],
)
async def test_no_turn_for_anything_else(
    name: str, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Notes, our echoes, templates, receipts and conversation events produce no turn."""
    await persist(redis, store, topology, name)
    assert await emit_turns(redis, store, topology) == []


async def test_human_reply_stops_turns(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """After a human agent's public reply, customer messages produce no turn."""
    await persist(redis, store, topology, "message_created__outgoing_agent_user")
    [conv] = await rows(store, "SELECT handler FROM conversations")
    assert conv["handler"] == "human"
    later = chatwoot.payload("message_created__whatsapp_incoming_phone")
    later["id"] = 918400
    later["conversation"]["updated_at"] = 1781775900.0
    later["conversation"]["status"] = "open"
    await persist(redis, store, topology, later)
    assert await emit_turns(redis, store, topology) == []


async def test_our_echo_updates_the_outbound_row(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Our own reply coming back (by ext_ref) records Chatwoot's id; no hand-off, no turn."""
    echo = chatwoot.payload("message_created__outgoing_agent_bot_echo")
    ref = echo["content_attributes"]["ext_ref"]
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ($1, 3, 1046, 'message', 'sending')",
            ref,
        )
    await persist(redis, store, topology, echo)
    [out] = await rows(store, "SELECT status, chatwoot_message_id FROM outbound")
    assert out == {"status": "sent", "chatwoot_message_id": echo["id"]}
    [conv] = await rows(store, "SELECT handler FROM conversations")
    assert conv["handler"] == "bot"
    [row] = await rows(store, "SELECT detail FROM webhook_events")
    assert row["detail"] == "echo of our reply"


async def test_receipt_moves_outbound_status_forward(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A message_updated receipt moves our reply to delivered; a late `sent` does not undo it."""
    receipt = chatwoot.payload("message_updated__outgoing_delivered_source_id_set")
    ref = receipt["content_attributes"]["ext_ref"]
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ($1, 3, 1044, 'message', 'sent')",
            ref,
        )
    late = chatwoot.payload("message_updated__outgoing_delivered_source_id_set")
    late["event"] = "message_created"
    late["conversation"]["messages"][0]["status"] = "sent"
    await persist(redis, store, topology, receipt, late)
    [out] = await rows(store, "SELECT status FROM outbound")
    assert out["status"] == "delivered"


async def test_one_active_conversation_per_customer_whatever_the_order(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Of two conversations of one customer on one channel, the newer is active, in any order."""
    older = chatwoot.payload("message_created__whatsapp_incoming_phone")
    newer = chatwoot.payload("message_created__whatsapp_incoming_phone")
    newer["id"], newer["conversation"]["id"] = 918500, 1050
    await persist(redis, store, topology, newer, older)
    found = await rows(
        store, "SELECT chatwoot_conversation_id AS id, active FROM conversations ORDER BY 1"
    )
    assert found == [{"id": 1044, "active": False}, {"id": 1050, "active": True}]


async def test_body_that_does_not_fit_goes_to_dead(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A message event without an id cannot be stored: it is dead-lettered, the rest goes on."""
    broken: dict[str, Any] = chatwoot.payload("message_created__private_note")
    del broken["id"]
    await persist(redis, store, topology, broken, "message_created__whatsapp_incoming_phone")
    letters: Any = await redis.xrange(topology.key("dead"))
    [(_, fields)] = letters
    assert fields[b"reason"] == b"permanent" and b"`id`" in fields[b"error"]
    assert len(await rows(store, "SELECT 1 FROM messages")) == 1


async def test_undecodable_entry_goes_to_dead(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An entry missing its contract fields is dead-lettered with the decode error."""
    await redis.xadd(topology.key("events"), {"event": "message_created"})
    await persist_runner(redis, store, topology).drain()
    letters: Any = await redis.xrange(topology.key("dead"))
    [(_, fields)] = letters
    assert fields[b"reason"] == b"undecodable"
    assert b"received_at" in fields[b"error"]


async def test_redelivered_entry_is_not_applied_twice(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An entry processed but not acked (crash before XACK) is skipped on redelivery."""
    [entry_id] = await feed(redis, topology, "message_created__webwidget_incoming_no_email")
    runner = persist_runner(redis, store, topology)
    await runner.drain()
    from consumers.runner import StreamEntry

    [(_, fields)] = await xrange(redis, topology.key("events"))
    await runner.handler(StreamEntry(id=entry_id, fields=fields, deliveries=2))
    assert len(await rows(store, "SELECT 1 FROM webhook_events")) == 1
    assert len(await emit_turns(redis, store, topology)) == 1


# -- hand-off, hand-back, edits and turn timing --------------------------------------------------


def incoming(
    message_id: int, at: float, *, conversation: int = 1044, text: str = "more"
) -> dict[str, Any]:
    """A WhatsApp customer message of conversation 1044 (pending, bot-handled) at `at`."""
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["id"], data["content"] = message_id, text
    data["created_at"] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    data["conversation"]["id"] = conversation
    data["conversation"]["updated_at"] = at
    return data


def conversation_update(
    at: float, *, status: str = "open", assignee: str | None = None
) -> dict[str, Any]:
    data = chatwoot.payload("conversation_updated__assignee_team")
    data["id"], data["inbox_id"], data["channel"] = 1044, 12, "Channel::Whatsapp"
    data["updated_at"], data["status"] = at, status
    data["meta"]["assignee_type"] = assignee
    data["meta"]["assignee"] = (
        {"id": 7 if assignee == "User" else 4, "type": "user"} if assignee else None
    )
    # The change this event reports, as Chatwoot lists it: what dates the hand-off.
    changed: list[dict[str, Any]] = []
    if assignee is not None:
        key = "assignee_id" if assignee == "User" else "assignee_agent_bot_id"
        changed.append(
            {key: {"previous_value": None, "current_value": data["meta"]["assignee"]["id"]}}
        )
    if status != "open":
        changed.append({"status": {"previous_value": "open", "current_value": status}})
    data["changed_attributes"] = changed
    return data


async def handler(store: Store) -> str:
    [conv] = await rows(
        store, "SELECT handler FROM conversations WHERE chatwoot_conversation_id = 1044"
    )
    return str(conv["handler"])


async def test_bot_assignment_hands_back_and_turns_resume(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Human reply stops turns; re-assignment to the bot brings them back (newer messages only)."""
    base = 1781775787.0
    await persist(redis, store, topology, incoming(918310, base))
    assert len(await emit_turns(redis, store, topology)) == 1
    human = chatwoot.payload("message_created__outgoing_agent_user")
    human["created_at"] = dt.datetime.fromtimestamp(base + 10, dt.UTC).isoformat()
    await persist(redis, store, topology, human, incoming(918330, base + 20))
    assert await handler(store) == "human"
    assert len(await emit_turns(redis, store, topology)) == 1  # no new turn
    # The human reply's snapshot (assigned to the agent) is at base + 70.
    await persist(redis, store, topology, conversation_update(base + 100, assignee="AgentBot"))
    assert await handler(store) == "bot"
    await persist(redis, store, topology, incoming(918340, base + 110))
    turns = await emit_turns(redis, store, topology)
    assert [m.id for m in turns[-1].messages] == [918340]  # not the one the human answered


async def test_resolve_returns_to_the_bot(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A human-handled conversation resolved later is the bot's again."""
    base = 1781775787.0
    await persist(redis, store, topology, conversation_update(base + 100, assignee="User"))
    assert await handler(store) == "human"
    await persist(redis, store, topology, conversation_update(base + 200, status="resolved"))
    assert await handler(store) == "bot"
    late = conversation_update(base + 150, assignee="User")
    await persist(redis, store, topology, late)
    assert await handler(store) == "bot"


async def test_human_takeover_drops_a_waiting_burst(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Customer messages waiting for their debounce are not sent once a human took over."""
    slow = msgspec.structs.replace(
        topology, turns=msgspec.structs.replace(topology.turns, debounce_ms=60_000)
    )
    await persist(redis, store, slow, incoming(918310, 1781775787.0))
    await persist(redis, store, slow, conversation_update(1781775800.0, assignee="User"))
    async with store.pool.acquire() as conn:  # the debounce ends
        await conn.execute("UPDATE conversations SET turn_due_at = now()")
    assert await emit_turns(redis, store, slow) == []


async def test_burst_becomes_one_turn(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Messages within the debounce window form one turn carrying all of them."""
    now = [dt.datetime(2026, 6, 18, 9, 0, tzinfo=dt.UTC)]
    timing = msgspec.structs.replace(topology.turns, debounce_ms=1000, max_messages=3)
    slow = msgspec.structs.replace(topology, turns=timing)
    persist_at = Persister(store, slow, clock=lambda: now[0])
    emitter = TurnEmitter(store, redis, slow, clock=lambda: now[0])
    for i, text in enumerate(["hi", "I have", "a question"][:2]):
        await feed(redis, slow, incoming(918310 + i, 1781775787.0 + i, text=text))
        await persist_runner(redis, store, slow, handler=persist_at).drain()
        now[0] += dt.timedelta(milliseconds=400)
    assert await emitter.drain() == 0  # quiet for less than the debounce
    now[0] += dt.timedelta(milliseconds=700)
    assert await emitter.drain() == 1
    [turn] = [events.decode(events.TurnEntry, f) for _, f in await xrange(redis, slow.key("turns"))]
    assert [m.content for m in turn.messages] == ["hi", "I have"]
    # max_messages: the third message of a new burst makes it due at once
    for i in range(3):
        await feed(redis, slow, incoming(918320 + i, 1781775800.0 + i))
        await persist_runner(redis, store, slow, handler=persist_at).drain()
    assert await emitter.drain() == 1


async def test_unrouted_conversations_get_no_turns(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An inbox no route covers stores its messages but produces no turn."""
    only_widget = msgspec.structs.replace(topology, routes=(Route(name="web", inbox=11),))
    await persist(redis, store, only_widget, "message_created__whatsapp_incoming_phone")
    assert await emit_turns(redis, store, only_widget) == []
    await persist(redis, store, only_widget, "message_created__webwidget_incoming_no_email")
    [turn] = await emit_turns(redis, store, only_widget)
    assert turn.route == "web" and turn.inbox == 11


async def test_route_picks_the_turn_stream(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A route's stream receives its conversations' turns."""
    sales = msgspec.structs.replace(topology, routes=(Route(name="sales", stream="turns:sales"),))
    await persist(redis, store, sales, "message_created__whatsapp_incoming_phone")
    await TurnEmitter(store, redis, sales).drain()
    assert len(await xrange(redis, sales.key("turns:sales"))) == 1


async def test_our_posts_coming_back_as_incoming_are_not_turns(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """On API inboxes our own posts come back as incoming; their ext_ref marks them."""
    data = chatwoot.payload("message_created__api_channel_incoming")
    data["content_attributes"] = {"ext_ref": "ours-1"}
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ('ours-1', 3, 1046, 'message', 'sending')"
        )
    await persist(redis, store, topology, data)
    assert await emit_turns(redis, store, topology) == []


async def test_edits_and_deletions_keep_the_newest_version(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """message_updated changes content only when newer; a deletion sticks."""
    created = chatwoot.payload("message_created__whatsapp_incoming_phone")
    edited = chatwoot.payload("message_created__whatsapp_incoming_phone")
    edited["event"], edited["content"] = "message_updated", "Edited text"
    edited["conversation"]["messages"][0]["updated_at"] = "2026-06-18T10:00:00.000Z"
    deleted = chatwoot.payload("message_created__whatsapp_incoming_phone")
    deleted["event"], deleted["content"] = "message_updated", "This message was deleted"
    deleted["content_attributes"] = {"deleted": True}
    deleted["conversation"]["messages"][0]["updated_at"] = "2026-06-18T11:00:00.000Z"
    await persist(redis, store, topology, deleted, created, edited)
    [row] = await rows(store, "SELECT content, deleted FROM messages")
    assert row == {"content": "This message was deleted", "deleted": True}


async def test_answered_customer_messages_are_read(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Once a reply to a turn is sent, the customer messages it covered become `read`."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    async with store.transaction() as tx:
        await tx.mark_answered(3, 1044, 918310)
    [row] = await rows(store, "SELECT status FROM messages")
    assert row["status"] == "read"


async def test_a_turn_carries_every_unanswered_message(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Until a reply answers them, customer messages ride along in each newer turn, so a reply
    dropped as superseded loses nothing: the next turn asks about all of it."""
    await persist(redis, store, topology, incoming(918310, 1781775787.0, text="first"))
    await emit_turns(redis, store, topology)
    await persist(redis, store, topology, incoming(918311, 1781775788.0, text="second"))
    first, second = await emit_turns(redis, store, topology)
    assert [m.content for m in first.messages] == ["first"]
    assert [m.content for m in second.messages] == ["first", "second"]
    async with store.transaction() as tx:
        await tx.mark_answered(3, 1044, second.through)
    await persist(redis, store, topology, incoming(918312, 1781775789.0, text="third"))
    *_, third = await emit_turns(redis, store, topology)
    assert [m.content for m in third.messages] == ["third"]


async def test_an_early_message_updated_does_not_cost_the_turn(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """message_updated can come before message_created (chatwoot.md §3): the customer message
    it stored still gets its turn when message_created follows, and only once."""
    created = chatwoot.payload("message_created__whatsapp_incoming_phone")
    updated = dict(created, event="message_updated")
    await persist(redis, store, topology, updated, created, created)
    turns = await emit_turns(redis, store, topology)
    assert [[m.id for m in t.messages] for t in turns] == [[created["id"]]]
