"""The pure conversation rules, on the real fixtures."""

from __future__ import annotations

import msgspec
import pytest

from consumers import conversation as cv
from ingress import views
from ingress.topology import Route
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


POLICY = Route(name="default")


def snapshot(status: str, assignee: str | None, at: float, **kw: object) -> views.Conversation:
    person = views.Person(id=7, type="user") if assignee else None
    meta = views.Meta(assignee=person, assignee_type=assignee)
    return views.Conversation(id=1, status=status, meta=meta, updated_at=at)


@pytest.mark.parametrize(
    ("view", "event", "changed", "policy", "expected"),
    [
        pytest.param(
            snapshot("pending", None, 10),
            "conversation_updated",
            None,
            POLICY,
            [],
            id="pending-says-nothing",
        ),
        pytest.param(
            snapshot("open", "User", 10),
            "conversation_updated",
            None,
            POLICY,
            [(H, 10)],
            id="assigned-to-human",
        ),
        pytest.param(
            snapshot("open", "AgentBot", 10),
            "conversation_updated",
            None,
            POLICY,
            [(B, 10)],
            id="assigned-to-bot",
        ),
        pytest.param(
            snapshot("open", "AgentBot", 10),
            "conversation_updated",
            None,
            Route(name="r", return_on_bot_assignment=False),
            [],
            id="bot-assignment-ignored-by-policy",
        ),
        pytest.param(
            snapshot("resolved", None, 10),
            "conversation_status_changed",
            None,
            POLICY,
            [(B, 10)],
            id="resolved",
        ),
        pytest.param(
            snapshot("resolved", None, 10),
            "conversation_status_changed",
            None,
            Route(name="r", return_on_resolve=False),
            [],
            id="resolve-kept-by-policy",
        ),
        pytest.param(
            snapshot("open", None, 10),
            "conversation_updated",
            [{"status": {"previous_value": "pending", "current_value": "open"}}],
            POLICY,
            [(H, 10)],
            id="pending-to-open-is-handoff",
        ),
        pytest.param(
            snapshot("open", None, 10),
            "conversation_opened",
            None,
            POLICY,
            [(H, 10)],
            id="bot-event-opened",
        ),
        pytest.param(
            snapshot("open", None, 10),
            "conversation_created",
            None,
            POLICY,
            [],
            id="open-unassigned-is-bot",
        ),
        pytest.param(
            snapshot("open", None, 10),
            "conversation_created",
            None,
            Route(name="r", open_unassigned="human"),
            [(H, 10)],
            id="open-unassigned-human-by-policy",
        ),
    ],
)
def test_snapshot_signals(
    view: views.Conversation,
    event: str,
    changed: list[dict[str, object]] | None,
    policy: Route,
    expected: list[tuple[cv.Handler, float]],
) -> None:
    """Status, assignee and the pending-to-open move say who handles, at `updated_at`."""
    found = cv.snapshot_signals(view, event=event, changed=changed, policy=policy)
    assert [(s.handler, s.at) for s in found] == expected


@pytest.mark.parametrize(
    ("name", "ours", "expected"),
    [
        ("message_created__outgoing_agent_user", False, [H]),
        ("message_created__private_note", False, []),
        ("message_created__outgoing_agent_bot_echo", True, []),
        ("message_created__outgoing_agent_bot_echo", False, []),
        ("message_created__template_auto_reply_no_sender", False, []),
        ("message_created__webwidget_incoming_no_email", False, []),
    ],
)
def test_message_signals(name: str, ours: bool, expected: list[cv.Handler]) -> None:
    """Only a human's public reply takes the conversation over; bots and templates do not."""
    assert [s.handler for s in cv.message_signals(message(name), ours=ours)] == expected


def test_native_app_reply_is_a_human() -> None:
    """A reply typed in the WhatsApp app (no sender, external_echo) is a human taking over."""
    payload = chatwoot.payload("message_created__template_auto_reply_no_sender")
    payload["message_type"] = "outgoing"
    payload["content_attributes"] = {"external_echo": True}
    found = cv.message_signals(msgspec.convert(payload, views.Message), ours=False)
    assert [s.handler for s in found] == [H]


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        pytest.param([], B, id="nothing-is-bot"),
        pytest.param([(H, 5)], H, id="human"),
        pytest.param([(H, 5), (B, 9)], B, id="later-bot-wins"),
        pytest.param([(B, 9), (H, 5)], B, id="order-does-not-matter"),
        pytest.param([(H, 12), (B, 9), (H, 5)], H, id="later-human-wins"),
        pytest.param([(H, 5), (H, 5), (B, 5)], B, id="tie-goes-to-the-bot"),
    ],
)
def test_takeover_merges_to_the_latest(
    signals: list[tuple[cv.Handler, float]], expected: cv.Handler
) -> None:
    """The later of the latest human and latest bot signal decides, in any order."""
    merged = cv.Takeover(human_since=None, bot_since=None).merge(
        [cv.Signal(handler=h, at=at, why="") for h, at in signals]
    )
    assert merged.handler is expected
