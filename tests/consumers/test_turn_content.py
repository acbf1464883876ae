"""What a turn carries besides the unanswered messages: the conversation's history, the contact,
the conversation's labels and attributes, the inbox; from webhooks through persist to sb:turns."""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import emit_turns, persist, persist_runner, rows, xadd, xrange

CONVERSATION = 1043  # the identified widget visitor's (contact 5502, inbox 11 "Website")


def customer(message_id: int, content: str, created_at: str) -> dict[str, Any]:
    data = chatwoot.payload("message_created__webwidget_incoming_with_email")
    data["id"], data["content"], data["created_at"] = message_id, content, created_at
    data["conversation"]["custom_attributes"] = {"order": "A-1"}
    data["conversation"]["labels"] = ["vip"]
    return data


def in_conversation(fixture: str, message_id: int, created_at: str) -> dict[str, Any]:
    """An agent's or the bot's message of another fixture, moved into CONVERSATION."""
    data = chatwoot.payload(fixture)
    snapshot = customer(message_id, "", created_at)["conversation"]
    data["id"], data["created_at"], data["conversation"] = message_id, created_at, snapshot
    data["inbox"] = {"id": 11, "name": "Website"}
    return data


def deleted(data: dict[str, Any]) -> dict[str, Any]:
    """The customer unsent it: Chatwoot's message_updated with a placeholder content."""
    gone = copy.deepcopy(data)
    gone["event"], gone["content"] = "message_updated", "This message was deleted"
    gone["content_attributes"] = {"deleted": True}
    return gone


def conversation() -> list[dict[str, Any]]:
    """A customer question, the bot's answer, an agent's private note, a question the customer
    unsent, then the question of the turn, and a greeting after it (past `through`)."""
    first = customer(918300, "Hello?", "2026-06-18T09:41:00.000Z")
    unsent = customer(918303, "wrong chat, sorry", "2026-06-18T09:41:40.000Z")
    bot = "message_created__outgoing_agent_bot_echo"
    note = "message_created__private_note"
    greeting = "message_created__template_auto_reply_no_sender"
    question = "My invoice for June shows the wrong VAT number."
    return [
        first,
        in_conversation(bot, 918301, "2026-06-18T09:41:10.000Z"),
        in_conversation(note, 918302, "2026-06-18T09:41:20.000Z"),
        unsent,
        deleted(unsent),
        customer(918305, question, "2026-06-18T09:42:22.933Z"),
        in_conversation(greeting, 918306, "2026-06-18T09:42:23.100Z"),
    ]


def with_route(topology: Topology, **changes: Any) -> Topology:
    [route] = topology.routes
    return msgspec.structs.replace(topology, routes=(msgspec.structs.replace(route, **changes),))


def with_history(topology: Topology, history: int) -> Topology:
    turns = msgspec.structs.replace(topology.turns, history=history)
    return msgspec.structs.replace(topology, turns=turns)


async def the_turn(redis: aioredis.Redis, store: Store, topology: Topology) -> events.TurnEntry:
    await persist(redis, store, topology, *conversation())
    [turn] = await emit_turns(redis, store, topology)
    return turn


async def test_a_turn_carries_history_contact_labels_attributes_and_inbox(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The turn holds the conversation up to its newest message, both sides, oldest first
    (no private note, no unsent message), the contact with its attributes, the conversation's
    labels and attributes, and the inbox's name."""
    turn = await the_turn(redis, store, topology)
    stored = await rows(store, "SELECT chatwoot_message_id AS id FROM messages ORDER BY 1")
    assert [r["id"] for r in stored][-1] == 918306  # the greeting after the turn: not in it
    assert [m.id for m in turn.messages] == [918300, 918305]
    assert [(m.id, m.direction, m.sender_kind, m.sender_id) for m in turn.history] == [
        (918300, "inbound", "contact", 5502),
        (918301, "outbound", "agent_bot", 4),
        (918305, "inbound", "contact", 5502),
    ]
    last = turn.history[-1]
    assert last.content == "My invoice for June shows the wrong VAT number."
    assert (last.content_type, last.private) == ("text", False)
    assert last.created_at == turn.messages[-1].created_at == "2026-06-18T09:42:22.933000+00:00"
    assert turn.contact_details == events.TurnContact(
        id=5502,
        name="Daniel Ortega",
        email="daniel.ortega@example.com",
        phone=None,
        identifier="usr_88213",
        custom_attributes={"plan": "pro"},
        additional_attributes={
            "city": "Madrid",
            "country": "Spain",
            "company_name": "Ortega Studio",
        },
    )
    assert (turn.inbox, turn.inbox_name, turn.channel) == (11, "Website", "Channel::WebWidget")
    assert turn.labels == ["vip"]
    assert turn.custom_attributes == {"order": "A-1"}
    assert turn.additional_attributes["referer"] == "https://www.acme.test/pricing"


async def test_a_contact_not_stored_is_its_id_alone(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A conversation whose contact row is missing still gives its turn, with the id only."""
    await persist(redis, store, topology, customer(918305, "Hi", "2026-06-18T09:42:22.933Z"))
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM contacts")
    [turn] = await emit_turns(redis, store, topology)
    assert turn.contact_details == events.TurnContact(id=5502)


async def test_the_stream_entry_is_flat_fields_with_json_values(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """On sb:turns the new fields are JSON like `messages`: an agent reading the raw entry
    (redis-cli, another language) gets what the decoded turn holds."""
    turn = await the_turn(redis, store, topology)
    [(_, fields)] = await xrange(redis, topology.key("turns"))
    history = msgspec.json.decode(fields[b"history"])
    assert [m["id"] for m in history] == [m.id for m in turn.history]
    assert msgspec.json.decode(fields[b"contact_details"])["custom_attributes"] == {"plan": "pro"}
    assert msgspec.json.decode(fields[b"labels"]) == ["vip"]
    assert fields[b"inbox_name"] == b"Website"


async def test_a_push_carries_the_same_json_as_the_stream(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The push group's body (the turn decoded from the stream, encoded as one JSON object)
    holds each field as the stream entry does: nested fields are the same JSON."""
    await the_turn(redis, store, topology)
    [(_, fields)] = await xrange(redis, topology.key("turns"))
    body = msgspec.json.decode(events.json_encoder.encode(events.decode(events.TurnEntry, fields)))
    nested = ("messages", "history", "contact_details", "labels", "custom_attributes")
    for name in (*nested, "additional_attributes"):
        assert body[name] == msgspec.json.decode(fields[name.encode()]), name
    assert body["inbox_name"] == fields[b"inbox_name"].decode()
    assert set(body) == {k.decode() for k in fields}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param(2, [918301, 918305], id="cut-at-n"),
        pytest.param(1, [918305], id="one"),
        pytest.param(0, [], id="none"),
        pytest.param(200, [918300, 918301, 918305], id="more-than-there-are"),
    ],
)
async def test_history_is_the_last_n_messages(
    redis: aioredis.Redis, store: Store, topology: Topology, history: int, expected: list[int]
) -> None:
    """`turns.history` keeps the newest N messages (oldest first); 0 carries none; the
    unanswered messages are carried whatever N."""
    turn = await the_turn(redis, store, with_history(topology, history))
    assert [m.id for m in turn.history] == expected
    assert [m.id for m in turn.messages] == [918300, 918305]


async def test_a_route_can_override_the_history_length(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A route's own `history` wins over the `turns:` default."""
    turn = await the_turn(redis, store, with_route(with_history(topology, 20), history=1))
    assert [m.id for m in turn.history] == [918305]


async def test_private_notes_only_on_routes_that_ask_for_them(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An agent's private note is in the history only with the route's `history_private`,
    marked private."""
    turn = await the_turn(redis, store, with_route(topology, history_private=True))
    assert [(m.id, m.private) for m in turn.history] == [
        (918300, False),
        (918301, False),
        (918302, True),
        (918305, False),
    ]
    assert turn.history[2].sender_kind == "user"


async def test_a_late_older_event_does_not_roll_back_contact_or_conversation(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A contact_updated newer than the message, then a message (and its conversation
    snapshot) created before both, arriving last: the turn shows the newer contact and
    conversation attributes."""
    current = customer(918305, "My invoice...", "2026-06-18T09:42:22.933Z")
    update = chatwoot.payload("contact_updated__last_activity_noise")
    update.update(
        id=5502,
        name="Daniel Ortega-Ruiz",
        email="daniel@ortega.example",
        identifier="usr_88213",
        phone_number=None,
        custom_attributes={"plan": "enterprise"},
        additional_attributes={"city": "Sevilla"},
    )
    update["changed_attributes"][0]["updated_at"]["current_value"] = "2026-06-18T09:50:00.000Z"
    late = customer(918290, "an old question", "2026-06-18T09:30:00.000Z")
    late["sender"].update(name="D. Ortega", custom_attributes={"plan": "free"})
    late["conversation"].update(
        updated_at=1781775000.5, custom_attributes={"order": "OLD"}, labels=["old"]
    )
    await persist(redis, store, topology, current, update, late)
    [turn] = await emit_turns(redis, store, topology)
    assert turn.contact_details is not None
    assert turn.contact_details.name == "Daniel Ortega-Ruiz"
    assert turn.contact_details.email == "daniel@ortega.example"
    assert turn.contact_details.custom_attributes == {"plan": "enterprise"}
    assert turn.contact_details.additional_attributes == {"city": "Sevilla"}
    assert (turn.labels, turn.custom_attributes) == (["vip"], {"order": "A-1"})


async def test_an_event_without_attributes_erases_none(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A newer contact or conversation payload that does not carry the attributes (an older
    Chatwoot, another serializer) keeps the stored ones."""
    first = customer(918305, "Hi", "2026-06-18T09:42:22.933Z")
    second = customer(918306, "Anyone?", "2026-06-18T09:43:00.000Z")
    for key in ("custom_attributes", "additional_attributes"):
        del second["sender"][key], second["conversation"][key]
    second["conversation"]["updated_at"] = 1781775800.5
    await persist(redis, store, topology, first, second)
    [turn] = await emit_turns(redis, store, topology)
    assert turn.contact_details is not None
    assert turn.contact_details.custom_attributes == {"plan": "pro"}
    assert turn.custom_attributes == {"order": "A-1"}
    assert turn.additional_attributes["referer"] == "https://www.acme.test/pricing"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        pytest.param(b'["not","an","object"]', {}, id="a-list"),
        pytest.param(b'"text"', {}, id="a-string"),
        pytest.param(b'{"n":1e400}', {}, id="a-number-past-float"),
        pytest.param(b'{"a\\u0000b":"c\\u0000d"}', {"a\ufffdb": "c\ufffdd"}, id="nul"),
    ],
)
async def test_odd_attributes_never_cost_the_message(
    redis: aioredis.Redis, store: Store, topology: Topology, raw: bytes, stored: Any
) -> None:
    """Attributes are free JSON: whatever their shape, the message is stored and its turn
    emitted; what PostgreSQL cannot hold is left out, NULs are replaced."""
    data = customer(918305, "Hi", "2026-06-18T09:42:22.933Z")
    for where in (data["sender"], data["conversation"]):
        where["custom_attributes"] = where["additional_attributes"] = "RAW"
    # Written into the raw body: 1e400 and escaped NULs do not come out of json.dumps as such.
    body = chatwoot.rails_json(data).replace(b'"RAW"', raw)
    entry = events.EventEntry(
        event="message_created", account=3, conversation=CONVERSATION,
        received_at=int(time.time() * 1000), signed=True, body=body,
    )  # fmt: skip
    await xadd(redis, topology.key("events"), events.encode(entry))
    await persist_runner(redis, store, topology).drain()
    assert await rows(store, "SELECT chatwoot_message_id FROM messages") == [
        {"chatwoot_message_id": 918305}
    ]
    [turn] = await emit_turns(redis, store, topology)
    assert turn.contact_details is not None
    assert turn.contact_details.custom_attributes == stored
    assert turn.contact_details.additional_attributes == stored
    assert turn.custom_attributes == turn.additional_attributes == stored


async def test_an_inbox_name_of_any_shape_never_costs_the_message(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A non-text inbox name is left out; the message and its turn are there."""
    data = customer(918305, "Hi", "2026-06-18T09:42:22.933Z")
    data["inbox"]["name"] = {"odd": True}
    await persist(redis, store, topology, data)
    [turn] = await emit_turns(redis, store, topology)
    assert (turn.inbox, turn.inbox_name) == (11, None)


class OldTurnEntry(events.Entry, frozen=True, kw_only=True):
    """sb:turns as agents built before issue #12 know it."""

    turn: str
    account: int
    inbox: int | None = None
    conversation: int
    channel: str | None = None
    contact: int | None = None
    through: int
    messages: list[events.TurnMessage]
    route: str


async def test_old_and_new_agents_decode_either_entry(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """An agent built against the older entry decodes a rich turn (the new fields are
    ignored); the new entry decodes an old one with empty defaults."""
    turn = await the_turn(redis, store, topology)
    [(_, fields)] = await xrange(redis, topology.key("turns"))
    old = events.decode(OldTurnEntry, fields)
    assert (old.turn, old.messages) == (turn.turn, turn.messages)
    again = events.decode(events.TurnEntry, events.encode(old))
    assert (again.history, again.contact_details, again.labels) == ([], None, [])


def converging_events(n: int) -> list[dict[str, Any]]:
    """Conversation 5000+n of contact 6000+n: a customer message, a newer snapshot without the
    inbox's name (conversation events never carry it), a newer contact_updated, and an older
    message with older contact and conversation data."""
    conversation, contact = 5000 + n, 6000 + n

    def message(message_id: int, created_at: str) -> dict[str, Any]:
        data = customer(message_id, "hi", created_at)
        data["conversation"]["id"] = conversation
        data["conversation"]["contact_inbox"]["source_id"] = f"visitor-{n}"
        data["sender"]["id"] = data["conversation"]["meta"]["sender"]["id"] = contact
        data["sender"]["identifier"] = f"usr_{n}"
        data["sender"]["email"] = data["conversation"]["meta"]["sender"]["email"] = None
        return data

    current = message(930000 + 10 * n, "2026-06-18T09:42:22.933Z")
    snapshot = copy.deepcopy(current["conversation"])
    snapshot.update(event="conversation_updated", changed_attributes=[], updated_at=1781775800.5)
    snapshot.update(custom_attributes={"order": "A-2"}, labels=["billing", "vip"])
    update = chatwoot.payload("contact_updated__last_activity_noise")
    update.update(id=contact, name="Daniel Ortega-Ruiz", custom_attributes={"plan": "enterprise"})
    update["changed_attributes"][0]["updated_at"]["current_value"] = "2026-06-18T09:50:00.000Z"
    late = message(930000 + 10 * n - 5, "2026-06-18T09:30:00.000Z")
    late["sender"].update(name="D. Ortega", custom_attributes={"plan": "free"})
    late["conversation"].update(
        updated_at=1781775000.5, custom_attributes={"order": "OLD"}, labels=["old"]
    )
    return [current, snapshot, update, late]


async def test_contact_and_conversation_data_converge_whatever_the_order(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Every order of the same four events (one conversation each) stores the newest contact
    and conversation data, and the inbox's name though only the older messages carry it."""
    for n, order in enumerate(itertools.permutations(range(4))):
        found = converging_events(n)
        for index in order:
            await persist(redis, store, topology, found[index])
    conversations = await rows(
        store,
        "SELECT custom_attributes::text, labels, inbox_name FROM conversations"
        " WHERE chatwoot_conversation_id >= 5000",
    )
    contacts = await rows(
        store,
        "SELECT name, custom_attributes::text FROM contacts WHERE chatwoot_contact_id >= 6000",
    )
    assert len(conversations) == len(contacts) == 24
    stored = {(r["custom_attributes"], tuple(r["labels"]), r["inbox_name"]) for r in conversations}
    assert stored == {('{"order": "A-2"}', ("billing", "vip"), "Website")}
    plan = '{"plan": "enterprise"}'
    assert {(r["name"], r["custom_attributes"]) for r in contacts} == {("Daniel Ortega-Ruiz", plan)}
