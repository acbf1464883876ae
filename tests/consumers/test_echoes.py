"""Echoes are trusted only where they can come from us: through the real Persister."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from consumers import echoes
from consumers.store import Store
from ingress import views
from ingress.topology import Topology
from tests import chatwoot
from tests.pipeline import emit_turns, persist, rows


async def pending_reply(store: Store, ref: str, conversation: int) -> None:
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status, "
            "attempts) VALUES ($1, 3, $2, 'message', 'sending', 1)",
            ref,
            conversation,
        )


async def test_a_customer_typing_an_ext_ref_is_not_our_echo(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A widget visitor whose message carries the ext_ref of our pending reply in the same
    conversation neither marks the reply posted nor loses their turn."""
    await pending_reply(store, "r-widget", 1042)
    data = chatwoot.payload("message_created__webwidget_incoming_no_email")
    data["content_attributes"] = {"ext_ref": "r-widget"}
    await persist(redis, store, topology, data)
    [reply] = await rows(store, "SELECT status, chatwoot_message_id FROM outbound")
    assert reply == {"status": "sending", "chatwoot_message_id": None}
    [turn] = await emit_turns(redis, store, topology)
    assert [m.id for m in turn.messages] == [918301]
    [audit] = await rows(store, "SELECT detail FROM webhook_events")
    assert audit["detail"] != "echo of our reply"


async def test_a_bot_echo_in_another_conversation_proves_nothing(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """A bot's message carrying the ref of a reply to another conversation leaves it alone."""
    await pending_reply(store, "pysvc-01J0ZK7Q4T9V2M6X8B3N5R1C7D", 2222)
    await persist(redis, store, topology, "message_created__outgoing_agent_bot_echo")
    [reply] = await rows(store, "SELECT status FROM outbound")
    assert reply["status"] == "sending"


async def test_our_echo_in_its_conversation_is_recognised(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The bot's echo in the reply's own conversation marks the reply sent."""
    await pending_reply(store, "pysvc-01J0ZK7Q4T9V2M6X8B3N5R1C7D", 1046)
    await persist(redis, store, topology, "message_created__outgoing_agent_bot_echo")
    [reply] = await rows(store, "SELECT status, chatwoot_message_id FROM outbound")
    assert reply == {"status": "sent", "chatwoot_message_id": 918316}


@pytest.mark.parametrize(
    ("name", "sender", "message_type", "ours"),
    [
        pytest.param("message_created__outgoing_agent_bot_echo", None, None, True, id="bot"),
        pytest.param("message_created__api_channel_incoming", None, None, True,
                     id="api-inbox-incoming"),
        pytest.param("message_created__webwidget_incoming_no_email", None, None, False,
                     id="widget-contact"),
        pytest.param("message_created__outgoing_agent_user", None, None, False, id="human"),
        pytest.param("message_created__webwidget_incoming_no_email", "null", "outgoing", True,
                     id="no-sender-outgoing"),
        pytest.param("message_created__webwidget_incoming_no_email", "null", "incoming", False,
                     id="no-sender-incoming"),
    ],
)  # fmt: skip
def test_could_be_ours(name: str, sender: str | None, message_type: str | None, ours: bool) -> None:
    """Only a bot, no person sending outgoing, or an API inbox can carry our echo."""
    data = chatwoot.payload(name)
    if sender == "null":
        data["sender"] = None
    if message_type is not None:
        data["message_type"] = message_type
    message = views.message_decoder.decode(chatwoot.rails_json(data))
    assert echoes.could_be_ours(message) is ours
