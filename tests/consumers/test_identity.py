"""Who the customer is, on every channel, through the real Persister: one active conversation
per customer and channel, whatever contact details arrive later."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers.store import Store
from consumers.turns import TurnEmitter
from consumers.unanswered import Unanswered
from ingress.topology import Topology
from tests import chatwoot
from tests.consumers.test_unanswered import T0, at
from tests.pipeline import emit_turns, persist, rows

ACTIVE = (
    "SELECT chatwoot_conversation_id AS id, identity, active FROM conversations"
    " ORDER BY chatwoot_conversation_id"
)


@pytest.mark.parametrize(
    ("name", "channel", "identity"),
    [
        pytest.param(
            "message_created__twilio_sms_incoming",
            "Channel::TwilioSms",
            "phone:+14155550123",
            id="twilio-sms",
        ),
        pytest.param(
            "message_created__sms_bandwidth_incoming",
            "Channel::Sms",
            "phone:+12125550199",
            id="sms",
        ),
        pytest.param(
            "message_created__facebook_incoming",
            "Channel::FacebookPage",
            "facebook:6912345678901234",
            id="facebook",
        ),
        pytest.param(
            "message_created__telegram_incoming", "Channel::Telegram", "telegram:287451903", id="tg"
        ),
        pytest.param(
            "message_created__line_incoming",
            "Channel::Line",
            "line:U4af4980629a3f1e2b7c8d9e0f1a2b3c4",
            id="line",
        ),
        pytest.param(
            "message_created__tiktok_incoming",
            "Channel::Tiktok",
            "tiktok:-000hZ3XkE9fYqA7tB2mN5pR8sV1wC4dG6",
            id="tiktok",
        ),
        pytest.param(
            "message_created__twitter_dm_incoming",
            "Channel::TwitterProfile",
            "twitter:1499990000000000001",
            id="twitter",
        ),
        pytest.param(
            "message_created__instagram_incoming",
            "Channel::Instagram",
            "instagram:8473920156384721",
            id="instagram",
        ),
    ],
)
async def test_each_channel_knows_its_customer(
    name: str,
    channel: str,
    identity: str,
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
) -> None:
    """A customer message of each channel stores its contact and an active conversation with
    the channel's identity, and asks for a turn."""
    data = chatwoot.payload(name)
    await persist(redis, store, topology, name)
    [conv] = await rows(store, "SELECT * FROM conversations")
    assert (conv["channel"], conv["identity"], conv["active"]) == (channel, identity, True)
    [contact] = await rows(store, "SELECT * FROM contacts")
    assert contact["chatwoot_contact_id"] == data["sender"]["id"]
    assert contact["phone"] == data["sender"]["phone_number"]
    [turn] = await emit_turns(redis, store, topology)
    assert (turn.channel, turn.contact, turn.through) == (channel, data["sender"]["id"], data["id"])


def later(
    name: str,
    *,
    conversation: int,
    message: int,
    seconds: float,
    **sender: str | None,
) -> dict[str, Any]:
    """The same customer's message `seconds` later, in `conversation`, with the contact's
    fields changed as Chatwoot would show them everywhere (sender and conversation meta)."""
    data = chatwoot.payload(name)
    conv = data["conversation"]
    at = conv["updated_at"] + seconds
    data["id"] = conv["messages"][0]["id"] = message
    conv["id"] = conv["messages"][0]["conversation_id"] = conversation
    conv["updated_at"] = at
    data["created_at"] = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    for person in (data["sender"], conv["meta"]["sender"], conv["messages"][0]["sender"]):
        person.update(sender)
    return data


@pytest.mark.parametrize(
    ("name", "added"),
    [
        pytest.param("message_created__telegram_incoming", {"phone_number": "+4915112345678"}),
        pytest.param("message_created__facebook_incoming", {"email": "tomas@example.es"}),
        pytest.param("message_created__line_incoming", {"email": "hanako@example.jp"}),
        pytest.param("message_created__tiktok_incoming", {"phone_number": "+33612345678"}),
        pytest.param("message_created__twitter_dm_incoming", {"email": "sam@example.com"}),
        pytest.param(
            "message_created__webwidget_incoming_no_email",
            {"email": "visitor@example.com", "identifier": "cust-5501"},
            id="webwidget-identified",
        ),
        pytest.param(
            "message_created__webwidget_incoming_no_email",
            {"email": "visitor@example.com"},
            id="webwidget-email",
        ),
    ],
)
async def test_details_arriving_later_do_not_split_the_customer(
    name: str, added: dict[str, str], redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A phone or email added to the contact after the first conversation: the same
    conversation stays one row, and the customer's next conversation ends the first one."""
    first = chatwoot.payload(name)
    first_id = first["conversation"]["id"]
    same = later(name, conversation=first_id, message=first["id"] + 1, seconds=60, **added)
    await persist(redis, store, topology, first, same)
    [before] = await rows(store, ACTIVE)
    assert before["active"] is True
    nxt = later(name, conversation=first_id + 100, message=first["id"] + 2, seconds=3600, **added)
    await persist(redis, store, topology, nxt)
    assert [(c["id"], c["active"]) for c in await rows(store, ACTIVE)] == [
        (first_id, False),
        (first_id + 100, True),
    ]


async def test_sms_without_phone_on_the_contact_is_known_by_its_source_id(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A Twilio SMS contact whose phone field is empty (edited away) is still the same phone:
    the contact inbox's source id, so its later conversation with the phone back is the
    same customer."""
    name = "message_created__twilio_sms_incoming"
    bare = later(name, conversation=1050, message=918340, seconds=0, phone_number=None)
    await persist(redis, store, topology, bare)
    [conv] = await rows(store, ACTIVE)
    assert conv["identity"] == "phone:+14155550123"
    again = later(name, conversation=1150, message=918400, seconds=60)
    await persist(redis, store, topology, again)
    assert [(c["id"], c["active"]) for c in await rows(store, ACTIVE)] == [
        (1050, False),
        (1150, True),
    ]


async def test_an_identified_visitor_ends_the_anonymous_conversation_in_any_order(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The widget visitor's identified conversation arriving before their anonymous one:
    the older one is stored ended, not a second active conversation."""
    name = "message_created__webwidget_incoming_no_email"
    first = chatwoot.payload(name)
    nxt = later(name, conversation=1142, message=918401, seconds=3600, email="v@example.com")
    await persist(redis, store, topology, nxt, first)
    assert [(c["id"], c["identity"], c["active"]) for c in await rows(store, ACTIVE)] == [
        (1042, "contact:5501", False),
        (1142, "email:v@example.com", True),
    ]


async def test_the_same_contact_in_another_inbox_keeps_both_conversations(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """One contact writing to two inboxes of one channel type (two Telegram bots): the
    second conversation does not end the first, and its turn is still handed over when
    nobody answers it."""
    first = chatwoot.payload("message_created__telegram_incoming")
    await persist(redis, store, topology, first)
    assert await TurnEmitter(store, redis, topology, clock=lambda: T0).drain() == 1
    second = copy.deepcopy(first)  # the same person, the company's other Telegram bot
    second["id"] += 100
    second["inbox"]["id"] = 20
    conv = second["conversation"]
    conv["id"] += 1
    conv["inbox_id"] = 20
    conv["contact_inbox"] = dict(conv["contact_inbox"], id=7399, inbox_id=20, source_id="999000111")
    for m in conv.get("messages", []):
        m["conversation_id"], m["inbox_id"], m["id"] = conv["id"], 20, second["id"]
    await persist(redis, store, topology, second)
    active = await rows(
        store, "SELECT chatwoot_conversation_id AS id, active FROM conversations ORDER BY 1"
    )
    assert active == [
        {"id": first["conversation"]["id"], "active": True},
        {"id": conv["id"], "active": True},
    ]
    assert await Unanswered(store, redis, topology, clock=lambda: at(121)).drain() == 1
    refs = [r["ref"] for r in await rows(store, "SELECT ref FROM outbound ORDER BY ref")]
    assert [ref.rsplit(":", 1)[-1] for ref in refs] == ["handoff", "note"]
