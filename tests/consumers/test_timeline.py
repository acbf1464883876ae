"""The timeline builder (pure): rows in, events in time order with their reasons."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from consumers import timeline
from consumers.timeline import Kind, TimelineRows
from ingress.events import DeadEntry

T0 = dt.datetime(2026, 6, 18, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def conversation(**over: Any) -> dict[str, Any]:
    base = {"account_id": 3, "chatwoot_conversation_id": 7, "inbox_id": 1,
            "channel": "Channel::Api", "status": "open", "handler": "bot", "assignee_type": None,
            "assignee_id": None, "human_since": None, "bot_since": None}  # fmt: skip
    return base | over


def message(number: int, seconds: float, **over: Any) -> dict[str, Any]:
    base = {"chatwoot_message_id": number, "direction": "inbound", "sender_kind": "contact",
            "private": False, "content": "hi", "status": "received", "created_at": at(seconds),
            "ext_ref": None, "deleted": False, "version": at(seconds).timestamp(),
            "stored_at": at(seconds)}  # fmt: skip
    return base | over


def webhook(seconds: float, event: str = "message_created", **over: Any) -> dict[str, Any]:
    base = {"stream_id": f"{seconds}-0", "delivery_id": "d1", "received_at": at(seconds),
            "source": "chatwoot", "event": event, "outcome": "applied", "detail": None}  # fmt: skip
    return base | over


def reply(ref: str, seconds: float, **over: Any) -> dict[str, Any]:
    base = {"ref": ref, "kind": "message", "content": "ok", "private": False, "status": "sent",
            "attempts": 1, "last_error": None, "chatwoot_message_id": 9, "turn": None,
            "created_at": at(seconds), "sent_at": at(seconds + 1)}  # fmt: skip
    return base | over


def rows(conv: dict[str, Any], **lists: list[dict[str, Any]]) -> TimelineRows:
    empty: dict[str, list[dict[str, Any]]] = {"webhooks": [], "messages": [], "turns": [],
                                              "replies": []}  # fmt: skip
    return TimelineRows(conversation=conv, contact=None, **(empty | lists))


@pytest.mark.parametrize(
    ("made", "why"),
    [
        pytest.param(rows(conversation(human_since=at(10).timestamp()),
                          messages=[message(2, 10, direction="outbound", sender_kind="user")]),
                     "a human agent replied (message #2)", id="human-reply"),
        pytest.param(rows(conversation(human_since=at(10).timestamp()),
                          messages=[message(2, 10, direction="outbound", sender_kind="user",
                                            private=True)],
                          webhooks=[webhook(11, "conversation_updated")]),
                     "webhook conversation_updated", id="private-note-is-no-signal"),
        pytest.param(rows(conversation(human_since=at(10).timestamp()),
                          replies=[reply("t:unanswered:handoff", 9, kind="handoff")]),
                     "hand-off t:unanswered:handoff", id="handoff"),
        pytest.param(rows(conversation(human_since=at(10).timestamp()),
                          webhooks=[webhook(30, "conversation_updated")]),
                     None, id="nothing-near"),
    ],
)  # fmt: skip
def test_a_handler_change_says_why(made: TimelineRows, why: str | None) -> None:
    """A change of handler is explained by the stored signal within seconds of it."""
    built = timeline.build(made, [])
    [change] = [e for e in built.events if e.kind is Kind.HANDLER]
    assert change.fields == {"handler": "human", "why": why}


def test_events_are_in_time_order_and_flags_are_shown() -> None:
    """Every kind of row becomes an event, sorted by time; deleted and updated are flagged."""
    made = rows(
        conversation(bot_since=at(5).timestamp()),
        webhooks=[webhook(0)],
        messages=[message(1, 1, deleted=True), message(3, 6, version=at(60).timestamp())],
        turns=[{"turn": "3:7:1", "through": 1, "message_ids": [1], "route": "default",
                "stream": "sb:turns", "emitted_at": at(2)}],
        replies=[reply("r", 3, status="failed", last_error="Chatwoot 422")],
    )  # fmt: skip
    dead = DeadEntry(stream="sb:events", group="persist", id="1-0", reason="permanent",
                     error="bad", original={"account": b"3", "conversation": b"7"})  # fmt: skip
    built = timeline.build(made, [(f"{int(at(4).timestamp() * 1000)}-0", dead)])
    assert [e.kind for e in built.events] == [Kind.WEBHOOK, Kind.MESSAGE, Kind.TURN, Kind.REPLY,
                                              Kind.DEAD, Kind.HANDLER, Kind.MESSAGE]  # fmt: skip
    assert "[deleted]" in built.events[1].summary
    assert built.events[3].fields["last_error"] == "Chatwoot 422"
    assert built.events[-1].fields["updated"] is True


@pytest.mark.parametrize(
    ("original", "ours"),
    [
        pytest.param({"account": b"3", "conversation": b"7"}, True, id="same"),
        pytest.param({"account": b"3", "conversation": b"70"}, False, id="other-conversation"),
        pytest.param({"account": b"4", "conversation": b"7"}, False, id="other-account"),
        pytest.param({"ref": b"x"}, False, id="no-conversation"),
    ],
)
def test_dead_letters_are_matched_by_account_and_conversation(
    original: dict[str, bytes], ours: bool
) -> None:
    """Only the dead letters whose original entry names this conversation belong to it."""
    assert timeline.concerns(DeadEntry(original=original), 3, 7) is ours


def test_preview_is_one_line_and_bounded() -> None:
    """Content previews fold whitespace and stop at PREVIEW characters."""
    assert timeline.preview("a\n\n b") == "a b"
    long = timeline.preview("x" * 500)
    assert len(long) == timeline.PREVIEW and long.endswith("…")
    assert timeline.preview(None) == ""
