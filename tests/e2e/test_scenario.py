"""The conversation scenario of the state-machine issue, through the real processes: a customer
types five lines in two seconds, a human takes over, hands back, the conversation is resolved
and a new one starts. Exactly the turns and rows it should."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.store import Store
from tests.e2e.deployment import Deployment, query

pytestmark = pytest.mark.e2e
CUSTOMER = {"id": 5503, "name": "Aisha Khan", "phone_number": "+919876543210"}


@pytest.fixture
def debounced(
    process_env: dict[str, str], workdir: Path, streams_file: Path, redis: object, store: Store
) -> Iterator[Deployment]:
    """A deployment whose turns wait for one second of quiet."""
    text = streams_file.read_text()
    path = workdir / "streams-debounced.yaml"
    path.write_text(text.replace("debounce_ms: 0", "debounce_ms: 1000").replace(
        "poll_ms: 250", "poll_ms: 100"))  # fmt: skip
    deployed = Deployment(process_env | {"SWITCHBOARD_STREAMS": str(path)}, workdir)
    try:
        deployed.up()
        yield deployed
    finally:
        deployed.down()


def act(deployment: Deployment, what: str, **body: Any) -> None:
    answer = httpx.post(f"{deployment.fake}/_fake/{what}", json={"account": 3, **body})
    answer.raise_for_status()


def bot_replies(deployment: Deployment) -> list[dict[str, Any]]:
    return [
        r
        for r in deployment.fake_requests()
        if r["method"] == "POST" and r["path"].endswith("/messages")
    ]


def test_the_scenario(debounced: Deployment, process_env: dict[str, str]) -> None:
    """Five lines make one turn; nothing while a human has it; one turn after hand-back; the
    resolved conversation ends and the next one is answered."""
    d, db = debounced, process_env["DATABASE_URL"]

    def handler() -> str:
        [row] = query(db, "SELECT handler FROM conversations WHERE chatwoot_conversation_id = 1044")
        return str(row["handler"])

    act(d, "conversations", conversation=1044, inbox=12, channel="Channel::Whatsapp",
        status="pending", contact=CUSTOMER, source_id="919876543210")  # fmt: skip
    for line in range(1, 6):
        act(d, "customer", conversation=1044, content=f"line {line}")
        time.sleep(0.4)
    d.wait_for("the reply to the burst", lambda: len(bot_replies(d)) == 1)
    assert bot_replies(d)[0]["json"]["content"] == (
        "You said: line 1 / line 2 / line 3 / line 4 / line 5"
    )

    act(d, "agent", conversation=1044, content="Hi, Priya here. Let me check.")
    d.wait_for("the human to take over", lambda: handler() == "human")
    act(d, "customer", conversation=1044, content="line 6")
    d.wait_for(
        "line 6 stored", lambda: bool(query(db, "SELECT 1 FROM messages WHERE content = 'line 6'"))
    )
    time.sleep(2)  # debounce and poll twice over: a turn would have gone out by now
    assert len(bot_replies(d)) == 1

    act(d, "assign", conversation=1044, assignee_type="AgentBot")
    d.wait_for("the hand-back", lambda: handler() == "bot")
    act(d, "customer", conversation=1044, content="line 7")
    d.wait_for("the reply after hand-back", lambda: len(bot_replies(d)) == 2)
    assert bot_replies(d)[1]["json"]["content"] == "You said: line 7"

    act(d, "status", conversation=1044, status="resolved")
    d.wait_for("the resolve", lambda: query(
        db, "SELECT status FROM conversations WHERE chatwoot_conversation_id = 1044"
    ) == [{"status": "resolved"}])  # fmt: skip
    act(d, "conversations", conversation=1050, inbox=12, channel="Channel::Whatsapp",
        status="pending", contact=CUSTOMER, source_id="919876543210")  # fmt: skip
    act(d, "customer", conversation=1050, content="line 8")
    d.wait_for("the new conversation's reply", lambda: len(bot_replies(d)) == 3)
    third = bot_replies(d)[2]
    assert third["path"].endswith("/conversations/1050/messages")
    assert third["json"]["content"] == "You said: line 8"

    conversations = query(
        db,
        "SELECT chatwoot_conversation_id AS id, active, identity, handler FROM conversations "
        "ORDER BY 1",
    )
    assert conversations == [
        {"id": 1044, "active": False, "identity": "phone:+919876543210", "handler": "bot"},
        {"id": 1050, "active": True, "identity": "phone:+919876543210", "handler": "bot"},
    ]
    inbound = query(
        db,
        "SELECT content, status FROM messages WHERE direction = 'inbound' "
        "ORDER BY chatwoot_message_id",
    )
    assert [(m["content"], m["status"]) for m in inbound] == [
        *[(f"line {n}", "read") for n in range(1, 6)],
        ("line 6", "received"),  # the human's to answer
        ("line 7", "read"),
        ("line 8", "read"),
    ]
    outbound = query(db, "SELECT status FROM outbound")
    assert [o["status"] for o in outbound] == ["sent"] * 3
    turns = query(db, "SELECT count(*) AS n FROM webhook_events WHERE outcome = 'applied'")
    assert turns[0]["n"] > 0
