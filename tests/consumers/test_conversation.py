"""The pure conversation rules, on the real fixtures."""

from __future__ import annotations

import msgspec
import pytest

from consumers import conversation as cv
from ingress import views
from tests import chatwoot

H, B = cv.Handler.HUMAN, cv.Handler.BOT


def message(name: str) -> views.Message:
    return msgspec.convert(chatwoot.payload(name), views.Message)


@pytest.mark.parametrize(
    ("name", "identity"),
    [
        pytest.param("message_created__whatsapp_incoming_phone", "phone:+919876543210", id="wa"),
        pytest.param("message_created__email_incoming", "email:laura.becker@example.org", id="em"),
        pytest.param(
            "message_created__webwidget_incoming_with_email", "identifier:", id="widget-known"
        ),
        pytest.param("message_created__webwidget_incoming_no_email", "contact:5501", id="anon"),
        pytest.param("message_created__instagram_incoming", "instagram:", id="instagram"),
        pytest.param("message_created__api_channel_incoming", "api:", id="api"),
    ],
)
def test_identity_per_channel(name: str, identity: str) -> None:
    """Each channel identifies the customer by what Chatwoot knows best for it."""
    conv = message(name).conversation
    assert conv is not None
    found = cv.identity(conv)
    assert found is not None and found.startswith(identity)


@pytest.mark.parametrize(
    ("name", "direction", "kind"),
    [
        pytest.param("message_created__webwidget_incoming_no_email", "inbound", "contact", id="c"),
        pytest.param("message_created__outgoing_agent_user", "outbound", "user", id="human"),
        pytest.param("message_created__outgoing_agent_bot_echo", "outbound", "agent_bot", id="bot"),
        pytest.param("message_created__private_note", "outbound", "user", id="note"),
        pytest.param(
            "message_created__template_auto_reply_no_sender", "outbound", "system", id="t"
        ),
    ],
)
def test_speaker(name: str, direction: str, kind: str) -> None:
    """Contacts have no `type`; agents are `user`, bots `agent_bot`, templates no sender."""
    who = cv.speaker(message(name))
    assert (who.direction, who.kind) == (direction, kind)


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("message_created__webwidget_incoming_no_email", True),
        ("message_created__whatsapp_incoming_phone", True),
        ("message_created__incoming_with_attachments", True),
        ("message_created__private_note", False),
        ("message_created__outgoing_agent_user", False),
        ("message_created__outgoing_agent_bot_echo", False),
        ("message_created__template_auto_reply_no_sender", False),
        ("message_updated__outgoing_delivered_source_id_set", False),
    ],
)
def test_only_public_incoming_messages_ask_for_a_turn(name: str, answer: bool) -> None:
    """Answer only public incoming messages (never notes, templates or our own echoes)."""
    assert cv.is_customer_turn_input(message(name)) is answer


@pytest.mark.parametrize(
    ("current", "previous", "status", "assignee", "expected"),
    [
        pytest.param(B, "pending", "pending", None, B, id="pending-stays-bot"),
        pytest.param(B, "pending", "open", None, H, id="pending-to-open-is-handoff"),
        pytest.param(B, None, "open", None, B, id="new-open-unassigned"),
        pytest.param(B, "open", "open", "User", H, id="assigned-to-human"),
        pytest.param(H, "open", "open", "AgentBot", B, id="assigned-back-to-bot"),
        pytest.param(H, "open", "resolved", None, B, id="resolve-returns-to-bot"),
        pytest.param(H, "open", "open", None, H, id="human-keeps-it"),
        pytest.param(H, "open", "snoozed", None, H, id="snooze-keeps-human"),
    ],
)
def test_handler_after_snapshot(
    current: cv.Handler,
    previous: str | None,
    status: str,
    assignee: str | None,
    expected: cv.Handler,
) -> None:
    """Status and assignee decide who handles a conversation."""
    assert (
        cv.handler_after_snapshot(
            current, previous_status=previous, status=status, assignee_type=assignee
        )
        is expected
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("message_created__outgoing_agent_user", H),
        ("message_created__private_note", B),
        ("message_created__outgoing_agent_bot_echo", B),
        ("message_created__webwidget_incoming_no_email", B),
    ],
)
def test_a_public_human_reply_takes_over(name: str, expected: cv.Handler) -> None:
    """Only a human agent's public reply hands the conversation to humans."""
    assert cv.handler_after_message(B, message(name)) is expected
