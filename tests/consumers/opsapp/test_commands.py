"""`switchboard conversation` and `switchboard ops` as a user runs them: real processes,
real Redis and PostgreSQL, the fake Chatwoot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from consumers.chatwoot import ChatwootClient
from consumers.store import Store
from ingress.topology import Topology
from tests import services
from tests.consumers.opsapp import story
from tests.consumers.test_deliver import client

__all__ = ["client"]  # the fixture
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHBOARD, *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def of_kind(timeline: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in timeline["events"] if e["kind"] == kind]


async def test_conversation_json_tells_the_whole_story(
    redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient,
    process_env: dict[str, str],
) -> None:  # fmt: skip
    """Webhooks with outcomes, messages, the turn and the messages it carried, the reply sent,
    the human taking over and why, the suppressed reply and why, the dead letter."""
    await story.tell(redis, store, topology, client)
    done = run(process_env, "conversation", "3", "1044", "--json")
    assert done.returncode == 0, done.stderr
    timeline = json.loads(done.stdout)
    assert (timeline["handler"], timeline["status"]) == ("human", "open")
    assert timeline["contact"]["name"] == "Aisha Khan"
    webhooks = [
        (w["fields"]["event"], w["fields"]["outcome"]) for w in of_kind(timeline, "webhook")
    ]
    assert webhooks.count(("message_created", "applied")) >= 2
    assert ("message_created", "dead") in webhooks
    assert {w["fields"]["delivery_id"] for w in of_kind(timeline, "webhook")} >= {"broken-1"}
    messages = {(m["fields"]["id"], m["fields"]["direction"], m["fields"]["sender_kind"])
                for m in of_kind(timeline, "message")}  # fmt: skip
    assert {(story.CUSTOMER_MESSAGE, "inbound", "contact"),
            (story.HUMAN_MESSAGE, "outbound", "user")} <= messages  # fmt: skip
    [turn] = of_kind(timeline, "turn")
    assert turn["fields"]["turn"] == story.TURN
    assert turn["fields"]["message_ids"] == [story.CUSTOMER_MESSAGE]
    replies = {r["fields"]["ref"]: r["fields"] for r in of_kind(timeline, "reply")}
    assert replies["bot-1"]["status"] == "sent" and replies["bot-1"]["attempts"] == 1
    assert replies["bot-1"]["turn"] == story.TURN
    assert replies["late-bot"]["status"] == "suppressed"
    assert replies["late-bot"]["suppressed"] == "a human handles the conversation"
    [human] = [h for h in of_kind(timeline, "handler") if h["fields"]["handler"] == "human"]
    assert human["fields"]["why"] == f"a human agent replied (message #{story.HUMAN_MESSAGE})"
    [dead] = of_kind(timeline, "dead")
    assert dead["fields"]["group"] == "persist" and dead["fields"]["reason"]
    stamps = [e["at"] for e in timeline["events"]]
    assert stamps == sorted(stamps)


async def test_conversation_text_is_one_line_per_event(
    redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient,
    process_env: dict[str, str],
) -> None:  # fmt: skip
    """The text timeline: a header, then each event on one line in time order."""
    await story.tell(redis, store, topology, client)
    done = run(process_env, "conversation", "3", "1044")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "conversation 3/1044: inbox 12 Channel::Whatsapp"
    assert lines[1] == "status open, handled by the human, assignee User 7"
    body = "\n".join(lines[4:])
    assert f"turn     {story.TURN} to default: messages {story.CUSTOMER_MESSAGE}" in body
    assert "late-bot message suppressed after 0 attempt(s) (suppressed: a human handles" in body
    assert "webhook  message_created dead (permanent: " in body
    assert ", delivery broken-1\n" in body + "\n"
    assert "dead     " in body


async def test_unknown_conversation_is_one_line_and_status_1(
    store: Store, redis: aioredis.Redis, process_env: dict[str, str]
) -> None:
    """A conversation never stored: one line saying so, exit status 1."""
    done = run(process_env, "conversation", "3", "999999")
    assert (done.returncode, done.stdout, done.stderr) == (1, "no conversation 3/999999\n", "")


def test_ops_refuses_a_network_address_without_a_token(process_env: dict[str, str]) -> None:
    """Without OPS_TOKEN the ops app (which can replay and purge) serves 127.0.0.1 only."""
    env = {k: v for k, v in process_env.items() if k != "OPS_TOKEN"}
    done = run(env, "ops", "--host", "0.0.0.0", "--port", "1")
    assert done.returncode == 2
    assert done.stderr == ("switchboard ops: OPS_TOKEN is not set: refusing to serve on 0.0.0.0; "
                           "set OPS_TOKEN, or serve on 127.0.0.1\n")  # fmt: skip


def test_ops_without_a_token_serves_this_machine_and_says_so(
    process_env: dict[str, str], workdir: Path
) -> None:
    """Unset OPS_TOKEN: `switchboard ops` starts on 127.0.0.1, saying there is no sign-in, and
    its views answer without a token; it stops cleanly on SIGTERM."""
    env = {k: v for k, v in process_env.items() if k != "OPS_TOKEN"}
    port = services.free_port()
    ops = services.Process("ops-open", [SWITCHBOARD, "ops", "--port", str(port)], env, workdir)
    try:
        services.wait_http(f"http://127.0.0.1:{port}/api/streams", ops)
        answer = httpx.get(f"http://127.0.0.1:{port}/api/streams")
        assert answer.status_code == 200 and isinstance(answer.json(), list)
    finally:
        assert ops.stop() == 0, ops.output()
    assert (f"switchboard ops: OPS_TOKEN unset: no sign-in, serving http://127.0.0.1:{port}/ "
            "on this machine only (127.0.0.1)") in ops.output()  # fmt: skip
