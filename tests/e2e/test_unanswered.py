"""End to end: an agent that never answers. The real processes hand the conversation to
humans at the fake Chatwoot, once: toggled `open`, with one private note saying why."""

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

CONVERSATION = "/api/v1/accounts/3/conversations/77"


@pytest.fixture
def silent(
    process_env: dict[str, str], workdir: Path, tmp_path: Path, redis: object, store: Store
) -> Iterator[Deployment]:
    """The deployment with a 2 s answer deadline, and no agent reading the turns."""
    streams = tmp_path / "streams.yaml"
    text = Path(process_env["SWITCHBOARD_STREAMS"]).read_text()
    assert "answer_within_s: 120" in text
    streams.write_text(text.replace("answer_within_s: 120", "answer_within_s: 2"))
    deployed = Deployment(process_env | {"SWITCHBOARD_STREAMS": str(streams)}, workdir)
    try:
        deployed.up()
        deployed.processes["echo-agent"].stop()  # the agent that never answers
        yield deployed
    finally:
        deployed.down()


def fake(deployment: Deployment, path: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{deployment.fake}/_fake/{path}", json={"account": 3, **body})
    answer.raise_for_status()


def test_a_turn_nobody_answers_is_handed_to_humans_once(
    silent: Deployment, process_env: dict[str, str]
) -> None:
    """Past `answer_within_s` the conversation is toggled `open` with one private note, once;
    the bot no longer handles it, and the hand-off is counted."""
    db = process_env["DATABASE_URL"]
    consumers = silent.processes["consumers"]
    silent.wait_for("consumers to start", lambda: "consumers.started" in consumers.output())
    contact = {"id": 5, "phone_number": "+15550007"}
    fake(silent, "conversations", {"conversation": 77, "inbox": 12, "status": "pending",
                                   "channel": "Channel::Whatsapp", "contact": contact})  # fmt: skip
    fake(silent, "customer", {"conversation": 77, "content": "Is anyone there?"})

    def posted() -> list[dict[str, Any]]:
        return [r for r in silent.fake_requests() if r["method"] == "POST"]

    silent.wait_for("the hand-off at the fake Chatwoot", lambda: len(posted()) >= 2, timeout=30)
    time.sleep(3)  # longer than the deadline again: nothing more may come
    sent = posted()
    assert sorted(r["path"] for r in sent) == [
        f"{CONVERSATION}/messages",
        f"{CONVERSATION}/toggle_status",
    ], silent.logs()
    [note] = [r["json"] for r in sent if r["path"].endswith("/messages")]
    assert note["private"] is True
    assert note["content"] == (
        "Switchboard: the bot did not answer within 2 s; handing over to a human."
    )
    [toggle] = [r["json"] for r in sent if r["path"].endswith("/toggle_status")]
    assert toggle == {"status": "open"}
    [conv] = query(db, "SELECT handler, answer_due_at FROM conversations")
    assert conv == {"handler": "human", "answer_due_at": None}
    outbox = query(db, "SELECT kind, status FROM outbound ORDER BY kind")
    assert outbox == [{"kind": "handoff", "status": "sent"}, {"kind": "message", "status": "sent"}]
    assert "turn.unanswered_handed_off" in consumers.output()
    metrics = httpx.get(f"{silent.ingress}/metrics").text
    assert 'switchboard_events_total{name="turns.unanswered_handoffs"} 1.0' in metrics, metrics
