"""The fake Chatwoot's lists and lost webhooks, in-process: what the backfill tests rely on."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from consumers.embedded import free_port
from tests.services import ROOT

USER = {"api_access_token": "user"}


def _module() -> Any:
    path = ROOT / "scripts" / "fake_chatwoot.py"
    spec = importlib.util.spec_from_file_location("fake_chatwoot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_chatwoot"] = module  # msgspec resolves its Structs' annotations there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def fake() -> AsyncIterator[httpx.AsyncClient]:
    module = _module()
    # Webhooks go to a port nobody listens on: a sent one fails to connect, a dropped one is
    # never tried. Either way the fake lists what became of it.
    nobody = f"http://127.0.0.1:{free_port()}/"
    chatwoot = module.FakeChatwoot(
        tokens={"bot"}, user_tokens={"user"}, secret=None, webhook_url=nobody, seed=5
    )
    transport = httpx.ASGITransport(app=chatwoot.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield client


async def test_a_drop_rule_loses_webhooks_and_lists_them(fake: httpx.AsyncClient) -> None:
    """POST /_fake/drop: the next webhooks are dropped (never sent) and listed as such."""
    await fake.post("/_fake/drop", json={"probability": 1.0, "times": 2})
    for n in range(3):
        await fake.post("/_fake/customer", json={"conversation": 1, "content": f"m{n}"})
    outcomes = [w["status"] for w in (await fake.get("/_fake/webhooks")).json()]
    assert outcomes == ["dropped", "dropped", "ConnectError"]


async def test_the_conversation_list_pages_by_last_activity(fake: httpx.AsyncClient) -> None:
    """25 a page, newest activity first, Chatwoot's shape; bots get 401."""
    for n in range(1, 28):
        await fake.post("/_fake/conversations", json={"conversation": n, "account": 1})
    await fake.post("/_fake/customer", json={"conversation": 3, "content": "latest"})
    path = "/api/v1/accounts/1/conversations"
    query = {"status": "all", "sort_by": "last_activity_at_desc"}
    first = (await fake.get(path, params=query | {"page": "1"}, headers=USER)).json()["data"]
    second = (await fake.get(path, params=query | {"page": "2"}, headers=USER)).json()["data"]
    assert first["meta"]["all_count"] == 27
    assert len(first["payload"]) == 25 and len(second["payload"]) == 2
    top = first["payload"][0]
    assert top["id"] == 3 and top["messages"][0]["content"] == "latest"
    assert {"last_activity_at", "timestamp", "updated_at", "meta", "inbox_id"} <= set(top)
    assert top["meta"]["sender"]["type"] == "contact" and "contact_inbox" not in top
    bot = await fake.get(path, params=query, headers={"api_access_token": "bot"})
    assert bot.status_code == 401


async def test_messages_page_after_an_id_in_the_rest_shape(fake: httpx.AsyncClient) -> None:
    """`after`: up to 100, ascending, int type and epoch time, typed sender."""
    for n in range(130):
        await fake.post("/_fake/customer", json={"conversation": 1, "content": f"m{n}"})
    path = "/api/v1/accounts/1/conversations/1/messages"
    page = (await fake.get(path, params={"after": "0"}, headers=USER)).json()["payload"]
    assert len(page) == 100 and [m["id"] for m in page] == sorted(m["id"] for m in page)
    rest = (await fake.get(path, params={"after": str(page[-1]["id"])}, headers=USER)).json()
    assert len(rest["payload"]) == 30
    message = page[0]
    assert message["message_type"] == 0 and isinstance(message["created_at"], int)
    assert message["sender"]["type"] == "contact" and message["sender_type"] == "Contact"
    latest = (await fake.get(path, headers=USER)).json()["payload"]
    assert [m["content"] for m in latest] == [f"m{n}" for n in range(110, 130)]


async def story(fake: httpx.AsyncClient, **inbox: bool) -> dict[str, Any]:
    """A human takes conversation 7 of inbox 12 and resolves it; the customer writes again.
    Answers the fake's reply to that message and the webhooks sent since the resolve."""
    await fake.post("/_fake/inboxes", json={"inbox": 12, **inbox})
    contact = {"id": 5, "name": "Aisha", "phone_number": "+15550001"}
    defined = {"conversation": 7, "inbox": 12, "channel": "Channel::Whatsapp", "contact": contact}
    await fake.post("/_fake/conversations", json=defined)
    await fake.post("/_fake/agent", json={"conversation": 7, "content": "Priya here"})
    await fake.post("/_fake/status", json={"conversation": 7, "status": "resolved"})
    before = len((await fake.get("/_fake/webhooks")).json())
    answer = await fake.post("/_fake/customer", json={"conversation": 7, "content": "again"})
    sent = (await fake.get("/_fake/webhooks")).json()[before:]
    return {"answer": answer.json(), "webhooks": [w["payload"] for w in sent]}


def shown(payload: dict[str, Any]) -> tuple[Any, ...]:
    conversation = payload.get("conversation", payload)
    return conversation["id"], conversation["status"], conversation["meta"]["assignee_type"]


async def test_locked_inbox_with_a_bot_reopens_pending_with_the_human(
    fake: httpx.AsyncClient,
) -> None:
    """lock_to_single_conversation on, an active bot: `pending`, the assignee kept, and the
    webhooks Chatwoot sends for it (status_changed with null changes, updated with them)."""
    told = await story(fake, lock_to_single_conversation=True, active_bot=True)
    assert told["answer"]["conversation"] == 7
    # Sent concurrently, as Chatwoot's jobs run: listed in the order they were answered.
    sent = {w["event"]: w for w in told["webhooks"]}
    assert sorted(sent) == [
        "conversation_status_changed",
        "conversation_updated",
        "message_created",
    ]
    assert {shown(w) for w in sent.values()} == {(7, "pending", "User")}
    assert sent["conversation_status_changed"]["changed_attributes"] is None
    changed = sent["conversation_updated"]["changed_attributes"]
    assert {"status": {"previous_value": "resolved", "current_value": "pending"}} in changed


async def test_locked_inbox_without_a_bot_reopens_open(fake: httpx.AsyncClient) -> None:
    told = await story(fake, lock_to_single_conversation=True, active_bot=False)
    assert {shown(w) for w in told["webhooks"]} == {(7, "open", "User")}


async def test_unlocked_inbox_starts_a_new_conversation(fake: httpx.AsyncClient) -> None:
    """Chatwoot's default: the resolved conversation stays so; a new one, announced by
    conversation_created, gets the message, and the next one too."""
    told = await story(fake, active_bot=True)
    assert told["answer"]["conversation"] == 8
    assert sorted((w["event"], shown(w)) for w in told["webhooks"]) == [
        ("conversation_created", (8, "pending", None)),
        ("message_created", (8, "pending", None)),
    ]
    again = await fake.post("/_fake/customer", json={"conversation": 7, "content": "still me"})
    assert again.json()["conversation"] == 8
    listed = (await fake.get("/api/v1/accounts/1/conversations", params={"status": "all"},
                             headers=USER)).json()["data"]["payload"]  # fmt: skip
    assert {c["id"]: c["status"] for c in listed} == {7: "resolved", 8: "pending"}


async def test_snoozed_becomes_open(fake: httpx.AsyncClient) -> None:
    await fake.post("/_fake/conversations", json={"conversation": 3, "status": "snoozed"})
    await fake.post("/_fake/customer", json={"conversation": 3, "content": "hello?"})
    sent = [w["payload"] for w in (await fake.get("/_fake/webhooks")).json()]
    assert sorted((w["event"], shown(w)[1]) for w in sent) == [
        ("conversation_status_changed", "open"),
        ("conversation_updated", "open"),
        ("message_created", "open"),
    ]


async def test_created_messages_take_the_fast_path_alike(fake: httpx.AsyncClient) -> None:
    """POST .../messages served from the ASGI scope answers, stores and records as through
    Starlette; a bad token is refused; with a fault rule set, the rule applies."""
    path = "/api/v1/accounts/1/conversations/9/messages"
    body = {"content": "hi <b>", "private": False, "content_attributes": {"ext_ref": "r1"}}
    created = await fake.post(path, json=body, headers={"api_access_token": "bot"})
    assert created.status_code == 200
    assert created.headers["content-type"] == "application/json"
    message = created.json()
    assert message["content"] == "hi <b>" and message["message_type"] == 1
    assert message["content_attributes"] == {"ext_ref": "r1"}
    assert message["sender"]["type"] == "agent_bot" and message["conversation_id"] == 9
    refused = await fake.post(path, json=body, headers={"api_access_token": "wrong"})
    assert refused.status_code == 401 and refused.json() == {"errors": ["Invalid Access Token"]}
    await fake.post("/_fake/faults", json={"rules": [{"path": "messages", "status": 500}]})
    failed = await fake.post(path, json=body, headers={"api_access_token": "bot"})
    assert failed.status_code == 500
    await fake.post("/_fake/faults", json={"rules": []})
    listed = (await fake.get(path, params={"after": "0"}, headers=USER)).json()["payload"]
    assert [m["id"] for m in listed] == [message["id"]]  # neither the refused nor the failed
    records = (await fake.get("/_fake/requests")).json()
    assert [(r["path"], r["token_ok"], r["answered"]) for r in records[:3]] == [
        (path, True, 200), (path, False, 401), (path, True, 500),
    ]  # fmt: skip
    assert records[0]["json"] == body and records[0]["query"] == ""


async def test_a_customer_message_answers_once_its_own_webhook_is_sent() -> None:
    """/_fake/customer waits for its own webhooks only: a receiver holding another
    conversation's webhook does not hold this one (the load generators' ceiling was that)."""
    held = asyncio.Event()
    release = asyncio.Event()
    seen = 0
    closed: list[asyncio.StreamWriter] = []
    all_closed = asyncio.Event()

    async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:  # the first webhook is held until the test releases it
            held.set()
            await release.wait()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                size = re.search(rb"content-length: (\d+)", head.lower())
                await reader.readexactly(int(size.group(1)) if size else 0)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            await writer.wait_closed()
            closed.append(writer)
            if len(closed) == seen:
                all_closed.set()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    chatwoot = _module().FakeChatwoot(
        tokens={"bot"}, user_tokens={"user"}, secret=None,
        webhook_url=f"http://127.0.0.1:{port}/", seed=5,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=chatwoot.app())
    async with server, httpx.AsyncClient(transport=transport, base_url="http://fake") as fake:
        first = asyncio.create_task(
            fake.post("/_fake/customer", json={"conversation": 1, "content": "held"})
        )
        await asyncio.wait_for(held.wait(), timeout=5)
        second = await asyncio.wait_for(
            fake.post("/_fake/customer", json={"conversation": 2, "content": "free"}), timeout=3
        )
        assert second.status_code == 200 and not first.done()
        release.set()
        assert (await asyncio.wait_for(first, timeout=5)).status_code == 200
        await chatwoot._webhook_client.aclose()
        # Every connection closed on both ends before the loop ends: none left for the
        # next test to trip on as an unraisable ResourceWarning.
        await asyncio.wait_for(all_closed.wait(), timeout=5)
    statuses = [(w["payload"]["content"], w["status"]) for w in chatwoot.webhooks]
    assert sorted(statuses) == [("free", 200), ("held", 200)]
