"""The pure conversation rules, on the real fixtures."""

from __future__ import annotations

import msgspec
import pytest

from consumers import conversation as cv
from ingress import views
from ingress.topology import Route
from tests import chatwoot

H, B = cv.Handler.HUMAN, cv.Handler.BOT


def as_message(payload: object) -> views.Message:
    # Decoded from JSON bytes as persist does: the views keep attribute objects raw (unparsed),
    # which `msgspec.convert` from Python objects cannot give.
    return msgspec.json.decode(msgspec.json.encode(payload), type=views.Message)


def message(name: str) -> views.Message:
    return as_message(chatwoot.payload(name))


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
CREATED = 1.0  # the conversation's created_at; its snapshots are at 10


def snapshot(status: str, assignee: str | None, at: float = 10) -> views.Conversation:
    person = views.Person(id=7 if assignee == "User" else 4, type="user") if assignee else None
    meta = views.Meta(assignee=person, assignee_type=assignee)
    return views.Conversation(id=1, status=status, meta=meta, created_at=CREATED, updated_at=at)


def change(name: str, previous: object, current: object) -> list[dict[str, object]]:
    return [{name: {"previous_value": previous, "current_value": current}}]


@pytest.mark.parametrize(
    ("view", "event", "changed", "policy", "expected"),
    [
        pytest.param(
            snapshot("pending", None), "message_created", None, POLICY, [], id="pending-shown"
        ),
        pytest.param(
            snapshot("open", "User"),
            "message_created",
            None,
            POLICY,
            [(H, CREATED)],
            id="assignee-shown-is-not-a-new-handoff",
        ),
        pytest.param(
            snapshot("open", "User"),
            "conversation_updated",
            [{"label_list": {"previous_value": [], "current_value": ["vip"]}}],
            POLICY,
            [(H, CREATED)],
            id="other-change-repeats-the-old-assignee",
        ),
        pytest.param(
            snapshot("open", "User"),
            "conversation_updated",
            change("assignee_id", None, 7),
            POLICY,
            [(H, CREATED), (H, 10)],
            id="assigned-to-human",
        ),
        pytest.param(
            snapshot("open", "User"),
            "conversation_updated",
            change("assignee_id", 9, 7),
            POLICY,
            [(H, CREATED), (H, 10)],
            id="reassigned-to-another-human",
        ),
        pytest.param(
            snapshot("pending", "User"),
            "conversation_status_changed",
            None,
            POLICY,
            [(H, CREATED), (B, 10)],
            id="reopened-pending-keeps-the-assignee-bot-answers",
        ),
        pytest.param(
            snapshot("pending", "User"),
            "conversation_updated",
            change("status", "resolved", "pending"),
            POLICY,
            [(H, CREATED), (B, 10)],
            id="moved-to-pending-is-the-bot",
        ),
        pytest.param(
            snapshot("open", "User"),
            "conversation_updated",
            change("status", "resolved", "open"),
            POLICY,
            [(H, CREATED), (H, 10)],
            id="reopened-open-with-a-human-is-theirs",
        ),
        pytest.param(
            snapshot("open", "User"),
            "conversation_updated",
            change("status", "snoozed", "open"),
            POLICY,
            [(H, CREATED), (H, 10)],
            id="unsnoozed-with-a-human-is-theirs",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_updated",
            change("status", "resolved", "open"),
            POLICY,
            [],
            id="reopened-open-unassigned-is-no-handoff",
        ),
        pytest.param(
            snapshot("pending", "User"),
            "conversation_updated",
            [
                {"status": {"previous_value": "open", "current_value": "pending"}},
                {"updated_at": {"previous_value": None, "current_value": "1970-01-01T00:00:06Z"}},
            ],
            POLICY,
            [(H, CREATED), (B, 6.0)],
            id="dated-by-changed-updated-at",
        ),
        pytest.param(
            snapshot("pending", "User"),
            "conversation_updated",
            [
                {"status": {"previous_value": "open", "current_value": "pending"}},
                {"updated_at": {"previous_value": None, "current_value": 7.5}},
            ],
            POLICY,
            [(H, CREATED), (B, 7.5)],
            id="dated-by-changed-updated-at-epoch",
        ),
        pytest.param(
            snapshot("open", "AgentBot"),
            "conversation_updated",
            change("assignee_agent_bot_id", None, 4),
            POLICY,
            [(B, CREATED), (B, 10)],
            id="assigned-to-bot",
        ),
        pytest.param(
            snapshot("open", "AgentBot"),
            "conversation_updated",
            change("assignee_id", 7, None),
            POLICY,
            [(B, CREATED), (B, 10)],
            id="human-unassigned-for-the-bot",
        ),
        pytest.param(
            snapshot("open", "AgentBot"),
            "conversation_updated",
            change("assignee_agent_bot_id", None, 4),
            Route(name="r", return_on_bot_assignment=False),
            [],
            id="bot-assignment-ignored-by-policy",
        ),
        pytest.param(
            snapshot("resolved", None),
            "conversation_status_changed",
            None,
            POLICY,
            [(B, CREATED), (B, 10)],
            id="resolved",
        ),
        pytest.param(
            snapshot("resolved", None),
            "conversation_status_changed",
            None,
            Route(name="r", return_on_resolve=False),
            [],
            id="resolve-kept-by-policy",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_updated",
            change("status", "pending", "open"),
            POLICY,
            [(H, 10)],
            id="pending-to-open-is-handoff",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_status_changed",
            None,
            POLICY,
            [],
            id="open-from-unknown-is-no-handoff",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_opened",
            None,
            POLICY,
            [(H, 10)],
            id="bot-event-opened",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_created",
            None,
            POLICY,
            [],
            id="open-unassigned-is-bot",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_created",
            None,
            Route(name="r", open_unassigned="human"),
            [(H, CREATED)],
            id="open-unassigned-human-by-policy",
        ),
        pytest.param(
            snapshot("open", None),
            "conversation_updated",
            change("status", "snoozed", "open"),
            Route(name="r", open_unassigned="human"),
            [(H, CREATED), (H, 10)],
            id="moved-to-open-unassigned-human-by-policy",
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
    """A change is dated at the event's `updated_at`; what a snapshot only shows is dated at
    the conversation's `created_at`, so an old assignee never counts as a new hand-off."""
    found = cv.snapshot_signals(view, event=event, changed=changed, policy=policy)
    assert [(s.handler, s.at) for s in found] == expected


def test_reopened_conversation_goes_back_to_the_bot() -> None:
    """The issue's story: a human assigned and replying, resolved, reopened `pending` by the
    customer with the human still assigned; the customer's message repeats that snapshot
    later still. The bot answers."""
    assigned = cv.snapshot_signals(
        snapshot("open", "User", at=20),
        event="conversation_updated",
        changed=change("assignee_id", None, 7),
        policy=POLICY,
    )
    replied = [cv.Signal(handler=H, at=25, why="a human replied")]
    resolved = cv.snapshot_signals(
        snapshot("resolved", "User", at=30),
        event="conversation_status_changed",
        changed=None,
        policy=POLICY,
    )
    reopened = cv.snapshot_signals(
        snapshot("pending", "User", at=40),
        event="conversation_status_changed",
        changed=None,
        policy=POLICY,
    )
    message = cv.snapshot_signals(
        snapshot("pending", "User", at=41), event="message_created", changed=None, policy=POLICY
    )
    nobody = cv.Takeover(human_since=None, bot_since=None)
    takeover = nobody.merge(assigned + replied + resolved + reopened + message)
    assert takeover.handler is B and takeover.bot_since == 40
    # Without the resolve, the move into pending alone gives it back to the bot.
    assert nobody.merge(assigned + replied + reopened + message).handler is B


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
    found = cv.message_signals(as_message(payload), ours=False)
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
