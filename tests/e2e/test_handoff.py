"""Hand-off as stock Chatwoot does it (issue 13), through the real processes and the fake:
a human takes a conversation and resolves it, the customer writes again. With the inbox's
`lock_to_single_conversation` on, Chatwoot reopens that conversation `pending` (the inbox has
an active bot) with the human still assigned, and the bot answers; off (Chatwoot's default),
a new conversation starts, the bot answers there, and the old one stays resolved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.deployment import Deployment, deployment, query

__all__ = ["deployment"]  # the fixture
pytestmark = pytest.mark.e2e


def act(d: Deployment, what: str, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{d.fake}/_fake/{what}", json={"account": 3, **body})
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def bot_replies(d: Deployment) -> list[dict[str, Any]]:
    return [
        r for r in d.fake_requests() if r["method"] == "POST" and r["path"].endswith("/messages")
    ]


def row(db: str, conversation: int) -> dict[str, Any]:
    found = query(db, "SELECT status, assignee_type, handler, active FROM conversations "
                      f"WHERE chatwoot_conversation_id = {conversation}")  # fmt: skip
    return found[0] if found else {}


def taken_and_resolved(d: Deployment, db: str, *, inbox: int, conversation: int) -> None:
    """The customer is answered by the bot; a human takes over; the human resolves it."""
    customer = {"id": 7000 + inbox, "name": "Aisha Khan", "phone_number": f"+9198765{inbox:05d}"}
    act(d, "conversations", conversation=conversation, inbox=inbox, channel="Channel::Whatsapp",
        status="pending", contact=customer, source_id=f"9198765{inbox:05d}")  # fmt: skip
    act(d, "customer", conversation=conversation, content="where is my order?")
    d.wait_for("the bot's first answer", lambda: len(bot_replies(d)) == 1)
    act(d, "agent", conversation=conversation, content="Priya here, let me look.")
    d.wait_for("the human to take over", lambda: row(db, conversation).get("handler") == "human")
    act(d, "status", conversation=conversation, status="resolved")
    d.wait_for("the resolve", lambda: row(db, conversation).get("status") == "resolved")


def test_locked_inbox_reopened_pending_with_the_human_the_bot_answers(
    deployment: Deployment, process_env: dict[str, str]
) -> None:
    d, db = deployment, process_env["DATABASE_URL"]
    act(d, "inboxes", inbox=12, lock_to_single_conversation=True, active_bot=True)
    taken_and_resolved(d, db, inbox=12, conversation=1044)
    landed = act(d, "customer", conversation=1044, content="it never came")
    assert landed["conversation"] == 1044
    d.wait_for("the bot's answer in the reopened conversation", lambda: len(bot_replies(d)) == 2)
    reply = bot_replies(d)[1]
    assert reply["path"].endswith("/conversations/1044/messages")
    assert reply["json"]["content"] == "You said: it never came"
    d.wait_for("the reopen stored", lambda: row(db, 1044).get("status") == "pending")
    assert row(db, 1044) == {
        "status": "pending", "assignee_type": "User", "handler": "bot", "active": True,
    }  # fmt: skip


def test_unlocked_inbox_new_conversation_the_bot_answers_there(
    deployment: Deployment, process_env: dict[str, str]
) -> None:
    d, db = deployment, process_env["DATABASE_URL"]
    act(d, "inboxes", inbox=13, lock_to_single_conversation=False, active_bot=True)
    taken_and_resolved(d, db, inbox=13, conversation=2044)
    landed = act(d, "customer", conversation=2044, content="it never came")
    new = landed["conversation"]
    assert new != 2044
    d.wait_for("the bot's answer in the new conversation", lambda: len(bot_replies(d)) == 2)
    reply = bot_replies(d)[1]
    assert reply["path"].endswith(f"/conversations/{new}/messages")
    assert reply["json"]["content"] == "You said: it never came"
    assert row(db, new) == {"status": "pending", "assignee_type": None, "handler": "bot",
                            "active": True}  # fmt: skip
    assert row(db, 2044) == {"status": "resolved", "assignee_type": "User", "handler": "bot",
                             "active": False}  # fmt: skip
    # At the fake too: the last word about the old conversation is that it is resolved.
    about = [w["payload"] for w in httpx.get(f"{d.fake}/_fake/webhooks").json()
             if (w["payload"].get("conversation") or w["payload"])["id"] == 2044]  # fmt: skip
    last = about[-1].get("conversation") or about[-1]
    assert last["status"] == "resolved"
