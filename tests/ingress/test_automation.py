"""Automation-rule and macro webhooks: their own path, a URL token, a business key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from ingress import automation, events
from ingress.app import create_app
from ingress.settings import Settings, WebhookSecret
from ingress.topology import Topology
from tests import chatwoot
from tests.ingress.test_app import Client, client_for, entries, make_settings
from tests.services import free_port

PATH = "/webhooks/chatwoot/automation"
TOKEN = "auto-7f3c9e21b4"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(topology: Topology, redis: aioredis.Redis) -> AsyncIterator[Client]:
    settings = make_settings(AUTOMATION_TOKEN=TOKEN, MAX_BODY_BYTES="65536")
    async for c in client_for(settings, topology, redis):
        yield c


def body_of(name: str, **changes: Any) -> bytes:
    data = chatwoot.payload(name)
    data.update(changes)
    return chatwoot.rails_json(data)


@pytest.mark.parametrize(
    "name",
    [
        "automation_event.conversation_created__webwidget",
        "automation_event.conversation_updated__assignee_team",
        "automation_event.message_created__whatsapp",
        "macro.executed__assign_and_label",
    ],
)
async def test_unsigned_automation_webhook_is_stored_with_a_business_key(
    name: str, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """With the right token, the unsigned body is stored as received: source=automation,
    signed=0, routed to its account and conversation, keyed by event, id and updated_at."""
    data = chatwoot.payload(name)
    body = chatwoot.rails_json(data)
    response = await client.post(PATH, params={"token": TOKEN}, content=body, headers=JSON)
    assert response.status_code == 200
    [(entry_id, fields)] = await entries(redis, topology, "events")
    assert response.json() == {"entry": entry_id.decode(), "spooled": False, "duplicate": False}
    entry = events.decode(events.EventEntry, fields)
    assert (entry.source, entry.signed, entry.body) == ("automation", False, body)
    assert (entry.event, entry.account, entry.conversation) == (data["event"], 3, data["id"])
    assert entry.delivery == f"automation:3:{data['event']}:{data['id']}:{data['updated_at']}"


async def test_the_same_state_twice_is_stored_once(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """No delivery id: the same event on the same conversation state is a duplicate; a newer
    `updated_at` or another event is not."""
    name = "automation_event.conversation_updated__assignee_team"
    first = body_of(name)
    again = first.replace(b'"unread_count"', b'"unread_count" ', 1)  # same key, other bytes
    newer = body_of(name, updated_at=chatwoot.payload(name)["updated_at"] + 1)
    macro = body_of(name, event="macro.executed")
    answers = []
    for body in (first, again, newer, macro):
        response = await client.post(PATH, params={"token": TOKEN}, content=body, headers=JSON)
        answers.append((response.status_code, response.json()["duplicate"]))
    assert answers == [(200, False), (200, True), (200, False), (200, False)]
    assert len(await entries(redis, topology, "events")) == 3


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"token": ""}, id="empty-token"),
        pytest.param({"token": TOKEN[:-1]}, id="wrong-token"),
        pytest.param({"token": TOKEN + "x"}, id="longer-token"),
        pytest.param({"token": "tøken"}, id="non-ascii"),
    ],
)
async def test_a_missing_or_wrong_token_is_401_and_writes_nothing(
    params: dict[str, str], client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Anything but the exact token is refused, and nothing is stored."""
    body = body_of("macro.executed__assign_and_label")
    response = await client.post(PATH, params=params, content=body, headers=JSON)
    assert response.status_code == 401
    assert "token" in response.json()["error"]
    assert await entries(redis, topology, "events") == []


async def test_the_path_is_off_without_automation_token(
    topology: Topology, redis: aioredis.Redis
) -> None:
    """Without AUTOMATION_TOKEN the path answers 404 saying how to turn it on."""
    async for client in client_for(make_settings(), topology, redis):
        body = body_of("macro.executed__assign_and_label")
        response = await client.post(PATH, params={"token": "x"}, content=body, headers=JSON)
        assert response.status_code == 404
        assert "AUTOMATION_TOKEN" in response.json()["error"]
    assert await entries(redis, topology, "events") == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"event": "macro.executed", ', 400, id="truncated"),
        pytest.param(b"[1, 2]", 400, id="not-an-object"),
        pytest.param(b"", 400, id="empty"),
        pytest.param(b"x" * 65537, 413, id="oversized"),
    ],
)
async def test_bad_bodies_are_refused_as_on_the_main_path(
    body: bytes, status: int, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Malformed JSON is 400 and an oversized body 413, nothing written."""
    response = await client.post(PATH, params={"token": TOKEN}, content=body, headers=JSON)
    assert response.status_code == status
    assert await entries(redis, topology, "events") == []


async def test_the_token_never_reaches_the_logs(topology: Topology, redis: aioredis.Redis) -> None:
    """Neither the right token nor a wrong one appears in any log line."""
    wrong = "wrong-" + TOKEN
    settings = make_settings(AUTOMATION_TOKEN=TOKEN)
    body = body_of("macro.executed__assign_and_label")
    with capture_logs() as logs:
        async for client in client_for(settings, topology, redis):
            for token in (TOKEN, wrong):
                await client.post(PATH, params={"token": token}, content=body, headers=JSON)
    assert [line["event"] for line in logs if "automation" in line["event"]] == [
        "automation.accepted",
        "automation.rejected",
    ]
    assert TOKEN not in repr(logs) and "token=" not in repr(logs)
    assert TOKEN not in repr(settings)


async def test_the_main_path_still_refuses_them_unsigned(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """An automation body posted unsigned to the signed path is still 401 there."""
    body = body_of("macro.executed__assign_and_label")
    response = await client.post("/webhooks/chatwoot", content=body, headers=JSON)
    assert response.status_code == 401
    assert await entries(redis, topology, "events") == []


async def test_while_redis_is_down_they_are_spooled_then_stored_once(
    topology: Topology, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Redis unreachable: answered 200 from the spool; drained later, the business key still
    keeps a repeat of the same state out of the stream."""
    settings = make_settings(AUTOMATION_TOKEN=TOKEN)
    spool = tmp_path / "events.spool"
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    body = body_of("macro.executed__assign_and_label")
    async for client in client_for_spool(settings, topology, dead, spool):
        for _ in range(2):
            response = await client.post(PATH, params={"token": TOKEN}, content=body, headers=JSON)
            assert (response.status_code, response.json()["spooled"]) == (200, True)
    await dead.aclose()
    async with LifespanManager(create_app(settings, topology, redis=redis, spool_path=spool)):
        pass  # the drainer, and a last drain on exit
    [(_, fields)] = await entries(redis, topology, "events")
    entry = events.decode(events.EventEntry, fields)
    assert (entry.source, entry.body) == ("automation", body)
    assert entry.delivery.startswith("automation:3:macro.executed:1043:")


async def client_for_spool(
    settings: Settings, topology: Topology, redis: aioredis.Redis, spool: Path
) -> AsyncIterator[Client]:
    app = create_app(settings, topology, redis=redis, spool_path=spool)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            yield client


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"event":"macro.executed","id":1043,"updated_at":1781775807.877317}',
            "automation:3:macro.executed:1043:1781775807.877317",
            id="conversation",
        ),
        pytest.param(
            b'{"id":9,"created_at":1781775800}', "automation:3:x:9:1781775800", id="created-at"
        ),
        pytest.param(
            b'{"id":"9:evil\\r\\nkey","updated_at":1}', "automation:3:x:ddd:1", id="odd-id"
        ),
    ],
)
def test_business_key(body: bytes, expected: str) -> None:
    """The key copies only plain numbers; anything else is digested."""
    event = "macro.executed" if b"macro" in body else "x"
    key = automation.business_key(body, event=event, account=3)
    if "ddd" in expected:
        prefix, _, digest = key.rpartition(":")[0].rpartition(":")
        assert prefix == "automation:3:x" and len(digest) == 32 and digest.isalnum()
    else:
        assert key == expected


def test_a_body_without_id_or_time_is_keyed_by_its_bytes() -> None:
    """Nothing dates it: identical bodies share a key, different ones do not."""
    one = automation.business_key(b'{"a":1}', event="automation_event.x", account=None)
    assert one == automation.business_key(b'{"a":1}', event="automation_event.x", account=None)
    assert one != automation.business_key(b'{"a":2}', event="automation_event.x", account=None)


def test_token_check() -> None:
    """Unset never matches; set, only the exact token does; a bound token only its account."""
    anyone, bound = WebhookSecret("t"), WebhookSecret("b", account=3)
    assert automation.token_ok([anyone], "t")
    assert not automation.token_ok([anyone], "T")
    assert not automation.token_ok([anyone], None)
    assert not automation.token_ok([], "t")
    assert automation.token_ok([anyone, bound], "b", frozenset({3}))
    assert not automation.token_ok([anyone, bound], "b", frozenset({3, 4}))
    assert not automation.token_ok([anyone, bound], "b", frozenset({4}))
    assert not automation.token_ok([anyone, bound], "b", frozenset())


def test_settings_read_automation_token() -> None:
    """AUTOMATION_TOKEN is a list of secrets like CHATWOOT_WEBHOOK_SECRETS: never in a repr,
    `N:token` bound to account N."""
    settings = make_settings(AUTOMATION_TOKEN=f"{TOKEN}, 7:other")
    first, second = settings.automation_tokens
    assert (first.account, second.account) == (None, 7)
    assert first.matches(TOKEN) and second.matches("other")
    assert TOKEN not in repr(settings.automation_tokens)


@pytest.mark.parametrize(
    "name",
    [
        "message_created__whatsapp_incoming_phone",
        "conversation_updated__assignee_team",
        "conversation_status_changed__resolved",
    ],
)
async def test_only_automation_events_are_taken_on_the_path(
    name: str, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A token holder cannot forge a customer message or a snapshot through the automation
    URL: any event but `automation_event.*` and `macro.executed` is 400, nothing stored."""
    response = await client.post(PATH, params={"token": TOKEN}, content=body_of(name), headers=JSON)
    assert response.status_code == 400
    assert await entries(redis, topology, "events") == []


async def test_a_bound_token_takes_only_its_account(
    topology: Topology, redis: aioredis.Redis
) -> None:
    """`3:token` verifies a body of account 3 only: another account's body is 401."""
    settings = make_settings(AUTOMATION_TOKEN="3:bound-tok")
    name = "macro.executed__assign_and_label"
    async for client in client_for(settings, topology, redis):
        other = body_of(name, account={"id": 4, "name": "other"})
        refused = await client.post(
            PATH, params={"token": "bound-tok"}, content=other, headers=JSON
        )
        assert refused.status_code == 401
        assert await entries(redis, topology, "events") == []
        own = await client.post(
            PATH, params={"token": "bound-tok"}, content=body_of(name), headers=JSON
        )
        assert own.status_code == 200
        assert len(await entries(redis, topology, "events")) == 1
