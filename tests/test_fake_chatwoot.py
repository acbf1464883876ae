"""The fake Chatwoot's lists and lost webhooks, in-process: what the backfill tests rely on."""

from __future__ import annotations

import importlib.util
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
