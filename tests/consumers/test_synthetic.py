"""Webhook bodies built from the REST listings: the shapes persist reads from a webhook."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from consumers import conversation as cv
from consumers import synthetic
from consumers.chatwoot import ApiMessage, ListedConversation
from ingress import views
from tests import chatwoot

LISTED = chatwoot.payload("api_list_messages__activity_and_private")["payload"]
CONVERSATION = ListedConversation(
    id=1044,
    inbox_id=12,
    status="open",
    meta={
        "sender": {"id": 5503, "name": "Aisha Khan", "phone_number": "+919876543210",
                   "type": "contact"},
        "channel": "Channel::Whatsapp",
        "assignee": {"id": 7, "name": "Priya Nair", "type": "user"},
    },
    updated_at=1781776572.25,
    last_activity_at=1781776572,
)  # fmt: skip


def listed(message_id: int) -> ApiMessage:
    [raw] = [m for m in LISTED if m["id"] == message_id]
    return msgspec.convert(raw, ApiMessage)


def webhook(message_id: int) -> views.Message:
    body = synthetic.message_created(3, CONVERSATION, listed(message_id))
    return views.message_decoder.decode(msgspec.json.encode(body))


@pytest.mark.parametrize(
    ("message_id", "kind", "direction", "sender"),
    [
        pytest.param(918310, "incoming", cv.Direction.INBOUND, cv.SenderKind.CONTACT, id="contact"),
        pytest.param(918311, "outgoing", cv.Direction.OUTBOUND, cv.SenderKind.AGENT_BOT, id="bot"),
        pytest.param(918314, "outgoing", cv.Direction.OUTBOUND, cv.SenderKind.USER, id="human"),
    ],
)
def test_speaker_and_type_read_as_from_the_webhook(
    message_id: int, kind: str, direction: cv.Direction, sender: cv.SenderKind
) -> None:
    """String message_type, and the sender persist would have read from the webhook."""
    message = webhook(message_id)
    assert message.message_type == kind
    who = cv.speaker(message)
    assert (who.direction, who.kind) == (direction, sender)


def test_a_contact_sender_has_no_type_and_times_are_iso() -> None:
    """As in webhooks: the contact without `type`, `created_at` as ISO-8601 with ms."""
    body: dict[str, Any] | None = synthetic.message_created(3, CONVERSATION, listed(918310))
    assert body is not None
    assert "type" not in body["sender"] and body["sender"]["id"] == 5503
    assert body["created_at"] == "2026-06-18T09:43:07.000Z"
    assert cv.epoch(body["created_at"]) == 1781775787


def test_our_reply_keeps_its_ext_ref_and_status() -> None:
    """The echo of our reply is recognised by ext_ref; its receipt shows in messages[]."""
    message = webhook(918311)
    assert message.ext_ref == "pysvc-01J0ZK5X1C8B4N7M2Q6T9V3R0A"
    assert message.conversation is not None
    assert [(m.id, m.status) for m in message.conversation.messages] == [(918311, "read")]


def test_the_snapshot_keeps_the_real_version_and_a_human_assignee() -> None:
    """The list's `updated_at` is the version; its assignee (always a user) is a User."""
    message = webhook(918320)
    snapshot = message.conversation
    assert snapshot is not None and snapshot.meta is not None
    assert snapshot.updated_at == 1781776572.25
    assert snapshot.channel == "Channel::Whatsapp" and snapshot.inbox_id == 12
    assert snapshot.meta.assignee_type == "User"
    assert message.attachments[0]["file_type"] == "image"
    assert cv.identity(snapshot) == "phone:+919876543210"


def test_activity_messages_make_no_webhook() -> None:
    """Type 2 ("Assigned to …") is never sent as a webhook, so none is made."""
    assert synthetic.message_created(3, CONVERSATION, listed(918313)) is None


def message(message_id: int, message_type: int, **fields: Any) -> ApiMessage:
    return ApiMessage(id=message_id, message_type=message_type, created_at=1.0, **fields)


QUESTION = message(10, 0, sender={"id": 5, "type": "contact"})
HUMAN = {"id": 7, "type": "user"}
BOT = {"id": 3, "type": "agent_bot"}


@pytest.mark.parametrize(
    ("later", "replied"),
    [
        pytest.param(message(11, 1, sender=HUMAN), 11, id="human-reply"),
        pytest.param(
            message(11, 1, content_attributes={"external_echo": True}), 11, id="external-echo"
        ),
        pytest.param(message(11, 3), None, id="template-out-of-office"),
        pytest.param(message(11, 1, sender=BOT), None, id="bot-reply"),
        pytest.param(message(11, 1, sender=HUMAN, private=True), None, id="private-note"),
        pytest.param(message(11, 0, sender={"id": 5, "type": "contact"}), None, id="customer"),
    ],
)
def test_only_a_humans_public_reply_answers_a_question(
    later: ApiMessage, replied: int | None
) -> None:
    """Only a human's public reply marks earlier questions answered; templates, bots do not."""
    assert synthetic.last_public_reply([QUESTION, later]) == replied
