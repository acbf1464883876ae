"""End to end: `switchboard ingress`, `switchboard consume`, the echo agent and the fake
Chatwoot as real processes, talking over HTTP and Redis as a user's deployment does."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests import chatwoot
from tests.e2e.deployment import Deployment, deployment, query

pytestmark = pytest.mark.e2e
__all__ = ["deployment"]


def test_a_customer_message_gets_one_reply(
    deployment: Deployment, process_env: dict[str, str]
) -> None:
    """A signed webhook becomes rows, a turn, the agent's reply at Chatwoot, and its echo."""
    db = process_env["DATABASE_URL"]
    body = chatwoot.rails_json(chatwoot.payload("message_created__webwidget_incoming_no_email"))
    answer = httpx.post(
        f"{deployment.ingress}/webhooks/chatwoot", content=body, headers=chatwoot.headers(body)
    )
    assert answer.status_code == 200

    def replied() -> bool:
        return any(r["method"] == "POST" for r in deployment.fake_requests())

    deployment.wait_for("the reply at the fake Chatwoot", replied)
    [post] = [r for r in deployment.fake_requests() if r["method"] == "POST"]
    assert post["path"] == "/api/v1/accounts/3/conversations/1042/messages"
    assert post["json"]["content"] == "You said: Hi, does the Pro plan include SSO?"
    ref = post["json"]["content_attributes"]["ext_ref"]
    assert ref == "echo-3:1042:918301"

    # The fake posts the echo webhook back; persist matches it to our outbound row.
    def echoed() -> bool:
        rows = query(db, "SELECT 1 FROM messages WHERE ext_ref IS NOT NULL")
        return len(rows) == 1

    deployment.wait_for("the echo to be stored", echoed)
    [out] = query(db, "SELECT ref, status, attempts, chatwoot_message_id FROM outbound")
    assert out["ref"] == ref and out["status"] == "sent" and out["attempts"] == 1
    assert out["chatwoot_message_id"] is not None
    messages = query(db, "SELECT direction, sender_kind, ext_ref FROM messages ORDER BY direction")
    assert messages == [
        {"direction": "inbound", "sender_kind": "contact", "ext_ref": None},
        {"direction": "outbound", "sender_kind": "agent_bot", "ext_ref": ref},
    ]
    [conv] = query(db, "SELECT handler, status, emitted_through FROM conversations")
    assert conv["handler"] == "bot" and conv["emitted_through"] == 918301
    # Our own echo produced no turn and no second reply.
    time.sleep(1)
    assert len([r for r in deployment.fake_requests() if r["method"] == "POST"]) == 1


def test_processes_stop_cleanly_on_sigterm(deployment: Deployment) -> None:
    """SIGTERM stops ingress and consumers with status 0 within the bound."""
    consumers = deployment.processes["consumers"]
    deployment.wait_for("consumers to start", lambda: "consumers.started" in consumers.output())
    started = time.monotonic()
    codes = {
        name: deployment.processes[name].stop(signal.SIGTERM, timeout=15)
        for name in ("consumers", "ingress")
    }
    assert codes == {"consumers": 0, "ingress": 0}, deployment.logs()
    assert time.monotonic() - started < 15
    assert "consumers.stopped" in consumers.output()
