"""Any order and any duplication of the same webhooks converge on the same rows (property)."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from consumers.persist import Persister
from consumers.runner import StreamEntry
from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.conftest import TABLES

RECEIPT_REF = "pysvc-01J0ZK5X1C8B4N7M2Q6T9V3R0A"


def history() -> list[dict[str, Any]]:
    """One customer's story across two WhatsApp conversations, plus noise."""
    created = chatwoot.payload("message_created__whatsapp_incoming_phone")
    edited = copy.deepcopy(created)
    edited["event"], edited["content"] = "message_updated", "Hello, is order #48213 here yet?"
    edited["conversation"]["messages"][0]["updated_at"] = "2026-06-18T09:50:00.000Z"
    bot_echo = chatwoot.payload("message_updated__outgoing_delivered_source_id_set")
    bot_echo["event"] = "message_created"
    bot_echo["conversation"]["messages"][0]["status"] = "sent"
    back_to_bot = chatwoot.payload("conversation_updated__assignee_team")
    back_to_bot.update(id=1044, inbox_id=12, channel="Channel::Whatsapp", updated_at=1781776500.5)
    back_to_bot["meta"]["assignee_type"] = "AgentBot"
    back_to_bot["meta"]["assignee"] = {"id": 4, "name": "Bot", "type": "agent_bot"}
    back_to_bot["changed_attributes"] = [
        {"assignee_id": {"previous_value": 7, "current_value": None}},
        {"assignee_agent_bot_id": {"previous_value": None, "current_value": 4}},
    ]
    back_to_bot["meta"]["sender"] = created["conversation"]["meta"]["sender"]
    back_to_bot["contact_inbox"] = created["conversation"]["contact_inbox"]
    next_conversation = copy.deepcopy(created)
    next_conversation["id"], next_conversation["conversation"]["id"] = 918600, 1050
    next_conversation["conversation"]["updated_at"] = 1781778000.0
    next_conversation["created_at"] = "2026-06-18T10:20:00.000Z"
    return [
        created,
        edited,
        chatwoot.payload("message_created__incoming_with_attachments"),
        chatwoot.payload("message_created__outgoing_agent_user"),
        chatwoot.payload("message_updated__outgoing_delivered_source_id_set"),
        bot_echo,
        chatwoot.payload("conversation_status_changed__resolved"),
        back_to_bot,
        next_conversation,
        chatwoot.payload("message_created__webwidget_incoming_no_email"),
        chatwoot.payload("message_created__private_note"),
        chatwoot.payload("conversation_updated__assignee_team"),
        chatwoot.payload("contact_created__webwidget_visitor"),
        chatwoot.payload("contact_updated__last_activity_noise"),
        chatwoot.payload("conversation_typing_on__agent"),
        *handoffs(),
    ]


# -- hand-off stories (issue 13): each change dated by what dates it ---------------------------
CREATED = 1781780000.0  # the stories' conversations are created then; t counts from there


def snapshot(conversation: int, status: str, assignee: int | None, t: float) -> dict[str, Any]:
    """A web-widget conversation of its own customer, as Chatwoot renders it at CREATED + t."""
    data = chatwoot.payload("conversation_updated__assignee_team")
    contact = {
        "id": 6000 + conversation,
        "name": f"Customer {conversation}",
        "email": None,
        "phone_number": None,
        "identifier": f"usr_{conversation}",
        "type": "contact",
    }
    human = {"id": assignee, "name": f"Agent {assignee}", "type": "user"}
    data.update(
        id=conversation,
        status=status,
        messages=[],
        created_at=int(CREATED),
        updated_at=CREATED + t,
        timestamp=int(CREATED + t),
        changed_attributes=None,
    )
    data["contact_inbox"]["source_id"] = f"src-{conversation}"
    data["meta"].update(sender=contact, assignee=human if assignee else None,
                        assignee_type="User" if assignee else None)  # fmt: skip
    return data


def updated(snap: dict[str, Any], **changes: tuple[object, object]) -> dict[str, Any]:
    """conversation_updated: the snapshot and the changes it reports, previous and current."""
    listed = [{k: {"previous_value": p, "current_value": c}} for k, (p, c) in changes.items()]
    return {**snap, "event": "conversation_updated", "changed_attributes": listed}


def status_changed(snap: dict[str, Any]) -> dict[str, Any]:
    return {**snap, "event": "conversation_status_changed", "changed_attributes": None}


def said(message: int, snap: dict[str, Any], *, by: int | None = None) -> dict[str, Any]:
    """A public message: the customer's, or agent `by`'s reply, with its conversation snapshot."""
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data.update(id=message, content=f"message {message}", conversation=snap, inbox={"id": 11},
                created_at=iso(snap["updated_at"]))  # fmt: skip
    data["sender"] = snap["meta"]["sender"]
    if by is not None:
        data["message_type"], data["sender"] = "outgoing", {"id": by, "type": "user"}
    return data


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def handoffs() -> list[dict[str, Any]]:
    """1051: a human takes it and resolves it; the customer writes again and it is reopened
    `pending` with the human still assigned (lock_to_single_conversation on, an active bot):
    the bot's. The customer's message shows that snapshot a little later than the reopen.
    1052: a human, back to the bot, re-assigned to another human; later snapshots repeat
    that assignee: the human's. 1053: an agent puts a human's conversation back to `pending`
    (the bot answers); the next customer message repeats the old assignee: the bot's.
    1054: a human resolves it (the bot's again); reopened `open` with that human still shown
    assigned (lock on, no active bot): the human's, from the reopen on."""
    reopened = snapshot(1051, "pending", 7, 40)
    bot_back = snapshot(1052, "open", None, 20)
    bot_back["meta"].update(assignee={"id": 4, "type": "agent_bot"}, assignee_type="AgentBot")
    return [
        {**snapshot(1051, "pending", None, 0), "event": "conversation_created"},
        said(919001, snapshot(1051, "pending", None, 1)),
        updated(snapshot(1051, "open", 7, 10), status=("pending", "open"), assignee_id=(None, 7)),
        said(919002, snapshot(1051, "open", 7, 15), by=7),
        status_changed(snapshot(1051, "resolved", 7, 30)),
        updated(snapshot(1051, "resolved", 7, 30), status=("open", "resolved")),
        status_changed(reopened),
        updated(reopened, status=("resolved", "pending")),
        said(919003, snapshot(1051, "pending", 7, 40.5)),
        updated(snapshot(1052, "open", 7, 10), assignee_id=(None, 7)),
        updated(bot_back, assignee_id=(7, None), assignee_agent_bot_id=(None, 4)),
        said(919011, snapshot(1052, "open", None, 25)),
        updated(snapshot(1052, "open", 9, 30), assignee_id=(None, 9)),
        said(919012, snapshot(1052, "open", 9, 35)),
        updated(snapshot(1052, "open", 9, 50), label_list=([], ["vip"])),
        updated(snapshot(1053, "open", 7, 10), assignee_id=(None, 7)),
        said(919021, snapshot(1053, "open", 7, 12), by=7),
        updated(snapshot(1053, "pending", 7, 20), status=("open", "pending")),
        said(919022, snapshot(1053, "pending", 7, 30)),
        updated(snapshot(1054, "open", 7, 10), assignee_id=(None, 7)),
        updated(snapshot(1054, "resolved", 7, 30), status=("open", "resolved")),
        said(919031, snapshot(1054, "open", 7, 41)),
        updated(snapshot(1054, "open", 7, 40), status=("resolved", "open")),
        updated(snapshot(1054, "open", 7, 50), label_list=([], ["vip"])),
    ]


# Who handles each conversation once every event is in, whatever the order.
HANDLERS = {1044: "bot", 1051: "bot", 1052: "human", 1053: "bot", 1054: "human"}


HISTORY = history()
ENTRIES = [
    events.encode(
        events.EventEntry(
            # Received after every snapshot's `updated_at` (persist ignores one dated ahead).
            event=p["event"], delivery=f"d{i}", account=3, received_at=1781790000000 + i,
            signed=True, body=chatwoot.rails_json(p),
        )
    )
    for i, p in enumerate(HISTORY)
]  # fmt: skip
SNAPSHOT = {
    "conversations": "SELECT account_id, chatwoot_conversation_id, inbox_id, channel, contact_id,"
    " identity, status, assignee_type, assignee_id, handler, human_since, bot_since, team_id,"
    " labels, active, version FROM conversations ORDER BY 1, 2",
    "messages": "SELECT account_id, chatwoot_message_id, chatwoot_conversation_id, direction,"
    " sender_kind, sender_id, private, message_type, content, content_type, attachments::text,"
    " status, created_at, ext_ref, deleted, version FROM messages ORDER BY 1, 2",
    "contacts": "SELECT account_id, chatwoot_contact_id, name, email, phone, identifier, version"
    " FROM contacts ORDER BY 1, 2",
    "outbound": "SELECT ref, status, chatwoot_message_id FROM outbound ORDER BY 1",
}
_counter = itertools.count()
IN_ORDER: list[dict[str, Any]] = []  # the rows of the in-order history, computed once


async def apply(store: Store, topology: Topology, order: list[int]) -> dict[str, Any]:
    async with store.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ($1, 3, 1044, 'message', 'sending')",
            RECEIPT_REF,
        )
    persist = Persister(store, topology, bot_id=4)
    for index in order:
        fields = {k.encode(): v for k, v in ENTRIES[index].items()}
        await persist(StreamEntry(id=f"{next(_counter)}-0", fields=fields, deliveries=1))
    async with store.pool.acquire() as conn:
        return {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in SNAPSHOT.items()}


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn) -> list[int]:
    every = list(range(len(HISTORY)))
    extra = draw(st.lists(st.sampled_from(every), max_size=5))
    return draw(st.permutations(every + extra))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=shuffled_with_duplicates())
async def test_any_order_and_duplication_converges(
    order: list[int], store: Store, topology: Topology
) -> None:
    """Shuffled, duplicated deliveries of one history leave exactly the in-order rows, and
    the handler each story says: a signal is dated by its change, not by the snapshot."""
    if not IN_ORDER:
        IN_ORDER.append(await apply(store, topology, list(range(len(HISTORY)))))
    rows = await apply(store, topology, order)
    assert rows == IN_ORDER[0]
    handlers = {r["chatwoot_conversation_id"]: r["handler"] for r in rows["conversations"]}
    assert {k: handlers[k] for k in HANDLERS} == HANDLERS


async def test_the_history_means_something(store: Store, topology: Topology) -> None:
    """The in-order rows are the story told: edited, resolved, back to the bot, a new
    conversation active, the receipt applied to our reply."""
    rows = await apply(store, topology, list(range(len(HISTORY))))
    conversations = {r["chatwoot_conversation_id"]: r for r in rows["conversations"]}
    assert conversations[1044]["status"] == "resolved" and not conversations[1044]["active"]
    assert conversations[1044]["handler"] == "bot" and conversations[1050]["active"]
    messages = {r["chatwoot_message_id"]: r for r in rows["messages"]}
    assert messages[918310]["content"] == "Hello, is order #48213 here yet?"
    assert messages[918311]["status"] == "delivered"
    assert rows["outbound"] == [
        {"ref": RECEIPT_REF, "status": "delivered", "chatwoot_message_id": 918311}
    ]
