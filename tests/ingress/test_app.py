"""The ingress app against a real Redis: what is written, and what is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from ingress import events, views
from ingress.app import create_app
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.topology import Topology
from tests import chatwoot
from tests.services import ROOT, free_port

Client = httpx.AsyncClient


def make_settings(**env: str) -> Settings:
    base = {"CHATWOOT_WEBHOOK_SECRETS": f"rotated-out,{chatwoot.SECRET}", "OUTBOUND_TOKEN": "ot"}
    base.update(env)
    return Settings.from_env(base)


async def client_for(
    settings: Settings, topology: Topology, redis: aioredis.Redis
) -> AsyncIterator[Client]:
    app = create_app(settings, topology, redis=redis)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            yield client


@pytest.fixture
async def client(topology: Topology, redis: aioredis.Redis) -> AsyncIterator[Client]:
    async for c in client_for(make_settings(MAX_BODY_BYTES="65536"), topology, redis):
        yield c


async def entries(redis: aioredis.Redis, topology: Topology, stream: str) -> list[Any]:
    rows: Any = await redis.xrange(topology.key(stream))
    return list(rows)


@pytest.mark.parametrize("name", chatwoot.webhook_names())
async def test_signed_fixture_is_stored_with_routing_fields(
    name: str, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Every fixture, signed, is answered 200 after it is in sb:events with its raw bytes."""
    data = chatwoot.payload(name)
    body = chatwoot.rails_json(data)
    headers = chatwoot.headers(body)
    response = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert response.status_code == 200
    [(entry_id, fields)] = await entries(redis, topology, "events")
    assert response.json() == {"entry": entry_id.decode(), "spooled": False, "duplicate": False}
    entry = events.decode(events.EventEntry, fields)
    assert entry.body == body
    assert entry.event == data["event"]
    assert entry.delivery == headers["x-chatwoot-delivery"]
    assert entry.signed is True and entry.source == "chatwoot"
    assert entry.account == 3
    expected_conversation = (
        data["conversation"]["id"]
        if "conversation" in data
        else data["id"]
        if name.startswith(views.CONVERSATION_BODIED)
        else None
    )
    assert entry.conversation == expected_conversation
    assert abs(entry.received_at - time.time() * 1000) < 60_000


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(
            {"x-chatwoot-signature": "sha256=" + "0" * 64}, "does not match", id="bad-signature"
        ),
        pytest.param({"x-chatwoot-signature": "sha256=00"}, "sha256=<hex>", id="short-signature"),
        pytest.param({"x-chatwoot-signature": ""}, "missing", id="unsigned"),
        pytest.param({"x-chatwoot-timestamp": str(int(time.time()) - 3600)}, "tolerance", id="old"),
    ],
)
async def test_bad_signature_is_401_and_writes_nothing(
    headers: dict[str, str], reason: str, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A request failing verification gets 401 with the reason, and no entry."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    sent = chatwoot.headers(body) | headers
    response = await client.post("/webhooks/chatwoot", content=body, headers=sent)
    assert response.status_code == 401
    assert reason in response.json()["error"]
    assert await entries(redis, topology, "events") == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"event": "message_created", ', 400, id="truncated"),
        pytest.param(b"[1, 2]", 400, id="not-an-object"),
        pytest.param(b"", 400, id="empty"),
        pytest.param(b"x" * 65537, 413, id="oversized"),
    ],
)
async def test_bad_bodies_are_refused_and_write_nothing(
    body: bytes, status: int, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Malformed JSON is 400 and an oversized body 413, both signed correctly, nothing written."""
    response = await client.post("/webhooks/chatwoot", content=body, headers=chatwoot.headers(body))
    assert response.status_code == status
    assert await entries(redis, topology, "events") == []


async def test_odd_routing_types_are_kept(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Valid JSON whose routing fields have unexpected types is stored, not refused."""
    body = b'{"event": "message_created", "account": "three", "conversation": [1]}'
    response = await client.post("/webhooks/chatwoot", content=body, headers=chatwoot.headers(body))
    assert response.status_code == 200
    [(_, fields)] = await entries(redis, topology, "events")
    entry = events.decode(events.EventEntry, fields)
    assert (entry.body, entry.account, entry.conversation) == (body, None, None)


async def test_unsigned_accepted_only_when_allowed(
    topology: Topology, redis: aioredis.Redis
) -> None:
    """With ALLOW_UNSIGNED_WEBHOOKS and no secret, an unsigned webhook is stored, signed=0."""
    body = chatwoot.rails_json(chatwoot.payload("contact_created__webwidget_visitor"))
    allowed = Settings.from_env({"ALLOW_UNSIGNED_WEBHOOKS": "1"})
    with capture_logs() as logs:
        async for client in client_for(allowed, topology, redis):
            response = await client.post(
                "/webhooks/chatwoot", content=body, headers=chatwoot.headers(body, secret=None)
            )
            assert response.status_code == 200
    [warning] = [line for line in logs if line["event"] == "ingress.unsigned"]
    assert warning["log_level"] == "warning"
    [(_, fields)] = await entries(redis, topology, "events")
    assert events.decode(events.EventEntry, fields).signed is False


async def test_redis_down_is_503(topology: Topology) -> None:
    """When the entry cannot be stored the answer is 503, never a 2xx."""
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    async for client in client_for(make_settings(), topology, dead):
        response = await client.post(
            "/webhooks/chatwoot", content=body, headers=chatwoot.headers(body)
        )
        assert response.status_code == 503
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 200
    await dead.aclose()


async def test_ready_when_redis_answers(client: Client) -> None:
    """/ready is 200 while Redis answers."""
    answer = (await client.get("/ready")).json()
    assert answer == {"status": "ready", "redis": "ok", "spool_bytes": 0}


# -- POST /outbound ---------------------------------------------------------------------------


async def test_outbound_publishes_and_answers_202_with_ref(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A valid reply lands in sb:outbound; a missing ref is generated and returned."""
    response = await client.post(
        "/outbound",
        json={"account": 3, "conversation": 1042, "content": "Hello"},
        headers={"authorization": "Bearer ot"},
    )
    assert response.status_code == 202
    ref = response.json()["ref"]
    [(_, fields)] = await entries(redis, topology, "outbound")
    entry = events.decode(events.OutboundEntry, fields)
    assert (entry.ref, entry.content, entry.conversation) == (ref, "Hello", 1042)


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        pytest.param({}, {}, 401, "bearer", id="no-token"),
        pytest.param({"authorization": "Bearer nope"}, {}, 401, "bearer", id="wrong-token"),
        pytest.param(
            {"authorization": "Bearer ot"},
            {"account": 3, "conversation": "x", "content": "hi"},
            422,
            "$.conversation",
            id="bad-field",
        ),
        pytest.param(
            {"authorization": "Bearer ot"},
            {"conversation": 3, "content": "hi"},
            422,
            "missing required field `account`",
            id="missing-field",
        ),
    ],
)
async def test_outbound_refusals(
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    error: str,
    client: Client,
    redis: aioredis.Redis,
    topology: Topology,
) -> None:
    """Unknown tokens get 401 and invalid bodies 422 naming the field; nothing is published."""
    response = await client.post("/outbound", json=body, headers=headers)
    assert response.status_code == status
    assert error in response.json()["error"]
    assert await entries(redis, topology, "outbound") == []


async def test_outbound_is_off_without_a_token(topology: Topology, redis: aioredis.Redis) -> None:
    """Without OUTBOUND_TOKEN the endpoint says how to turn it on."""
    async for client in client_for(make_settings(OUTBOUND_TOKEN=""), topology, redis):
        response = await client.post("/outbound", json={})
        assert response.status_code == 404
        assert "OUTBOUND_TOKEN" in response.json()["error"]


async def test_a_repeated_delivery_id_is_stored_once(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """The same X-Chatwoot-Delivery twice (a bot webhook retried) is answered 200, stored once."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    headers = chatwoot.headers(body)
    first = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    again = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(await entries(redis, topology, "events")) == 1


async def test_a_long_delivery_id_is_kept_as_its_digest(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """An unbounded X-Chatwoot-Delivery is stored as a stable sha256 digest: still deduplicated,
    never too long for the dedup key or the indexed audit column."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    headers = {**chatwoot.headers(body), "x-chatwoot-delivery": "d" * 100 + "e" * 8000}
    first = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    again = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert first.status_code == 200 and again.json()["duplicate"] is True
    [(_, fields)] = await entries(redis, topology, "events")
    delivery = events.decode(events.EventEntry, fields).delivery
    assert delivery.startswith("sha256:") and len(delivery) == len("sha256:") + 64


async def test_metrics_show_the_pipeline(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """/metrics counts webhooks by outcome and reads streams and consumer counters from Redis."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    await client.post("/webhooks/chatwoot", content=body, headers=chatwoot.headers(body))
    await client.post("/webhooks/chatwoot", content=b"{", headers=chatwoot.headers(b"{"))
    await redis.hincrby(topology.key("metrics"), "deliver.sent", 3)
    text = (await client.get("/metrics")).text
    assert 'switchboard_webhooks_total{outcome="stored"} 1.0' in text
    assert 'switchboard_webhooks_total{outcome="malformed"} 1.0' in text
    assert f'switchboard_stream_length{{stream="{topology.key("events")}"}} 1.0' in text
    assert 'switchboard_events_total{name="deliver.sent"} 3.0' in text
    assert "switchboard_redis_up 1.0" in text


# -- who may sign -----------------------------------------------------------------------------


def test_no_secret_refuses_to_create_the_app(topology: Topology) -> None:
    """Unsigned by accident is impossible: no secret and no ALLOW_UNSIGNED_WEBHOOKS, no app."""
    with pytest.raises(ConfigError, match="ALLOW_UNSIGNED_WEBHOOKS=1"):
        create_app(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1"}), topology)


def test_python_m_ingress_without_a_secret_exits_2_with_one_line(streams_file: Any) -> None:
    """`python -m ingress` without a secret prints one line naming what to set, and exits 2."""
    env = {"REDIS_URL": "redis://127.0.0.1:1", "SWITCHBOARD_STREAMS": str(streams_file),
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "ingress"], env=env, cwd=ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("switchboard ingress: CHATWOOT_WEBHOOK_SECRETS is not set")


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("sha256=" + "é" * 64, id="latin1"),
        pytest.param("sha256=" + "\u0663" * 64, id="arabic-digits-utf8"),
        pytest.param("\U0001f600", id="emoji"),
        pytest.param("sha256=" + "0" * 100_000, id="huge"),
    ],
)
async def test_non_ascii_signature_header_is_401_not_500(
    signature: str, client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A signature header in any encoding is refused with 401 (it used to raise a TypeError)."""
    body = chatwoot.rails_json(chatwoot.payload("message_created__private_note"))
    headers: dict[str, Any] = chatwoot.headers(body)
    headers["x-chatwoot-signature"] = signature.encode("utf-8")
    response = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert response.status_code == 401
    assert await entries(redis, topology, "events") == []


def account_body(*, account: int, conversation_account: int | None = None) -> bytes:
    data = chatwoot.payload("message_created__private_note")
    data["account"] = {"id": account, "name": "Acme"}
    data["conversation"]["account"] = {"id": conversation_account or account}
    return chatwoot.rails_json(data)


@pytest.mark.parametrize(
    ("secret", "body", "status"),
    [
        pytest.param("whsec_a", account_body(account=3), 200, id="own-account"),
        pytest.param("whsec_b", account_body(account=7), 200, id="other-bound-own"),
        pytest.param("whsec_a", account_body(account=7), 401, id="cross-account"),
        pytest.param("whsec_a", account_body(account=3, conversation_account=7), 401,
                     id="smuggled-account"),
        pytest.param("whsec_plain", account_body(account=9), 200, id="plain-any"),
    ],
)  # fmt: skip
async def test_per_account_secrets(
    secret: str, body: bytes, status: int, topology: Topology, redis: aioredis.Redis
) -> None:
    """`N:secret` signs only account N's events; a plain secret signs any account's."""
    settings = make_settings(CHATWOOT_WEBHOOK_SECRETS="3:whsec_a,7:whsec_b,whsec_plain")
    async for client in client_for(settings, topology, redis):
        sent = chatwoot.headers(body, secret=secret)
        response = await client.post("/webhooks/chatwoot", content=body, headers=sent)
        assert response.status_code == status
    assert len(await entries(redis, topology, "events")) == (1 if status == 200 else 0)


# -- POST /outbound with an Idempotency-Key ------------------------------------------------------


async def test_a_retried_post_with_the_same_key_gets_the_same_202_and_one_entry(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """The key is the reply's ref; the second POST is answered as the first, adding nothing."""
    body = {"account": 3, "conversation": 1042, "content": "Hello"}
    headers = {"authorization": "Bearer ot", "idempotency-key": "order-7:reply"}
    first = await client.post("/outbound", json=body, headers=headers)
    second = await client.post("/outbound", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() and first.json()["ref"] == "order-7:reply"
    [(_, fields)] = await entries(redis, topology, "outbound")
    assert events.decode(events.OutboundEntry, fields).ref == "order-7:reply"


async def test_the_body_ref_is_a_key_too(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Without the header, the body's ref makes the POST idempotent the same way."""
    body = {"account": 3, "conversation": 1042, "content": "Hello", "ref": "r-1"}
    for _ in range(2):
        answer = await client.post("/outbound", json=body, headers={"authorization": "Bearer ot"})
        assert answer.status_code == 202
    assert len(await entries(redis, topology, "outbound")) == 1


@pytest.mark.parametrize(
    ("key", "body", "error"),
    [
        pytest.param("k" * 201, {}, "Idempotency-Key is longer than 200", id="long"),
        pytest.param("a b", {}, "Idempotency-Key may hold only", id="space"),
        pytest.param("é", {}, "Idempotency-Key may hold only", id="non-ascii"),
        pytest.param(
            "k-1", {"ref": "k-2"}, "Idempotency-Key and the body's ref differ", id="differs"
        ),  # fmt: skip
    ],
)
async def test_a_bad_key_is_422_naming_the_header(
    key: str, body: dict[str, str], error: str,
    client: Client, redis: aioredis.Redis, topology: Topology,
) -> None:  # fmt: skip
    """A key past the ref limit, with characters a ref cannot carry, or contradicting the
    body: 422 naming the header, nothing published."""
    response = await client.post(
        "/outbound",
        json={"account": 3, "conversation": 1042, "content": "Hello", **body},
        headers={b"authorization": b"Bearer ot", b"idempotency-key": key.encode()},
    )
    assert response.status_code == 422 and error in response.json()["error"]
    assert await entries(redis, topology, "outbound") == []


async def test_a_key_reused_with_another_body_is_refused(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """The same key with a different reply is a client bug: 422, the first reply stands."""
    headers = {"authorization": "Bearer ot", "idempotency-key": "k-9"}
    first = await client.post("/outbound", json={"account": 3, "conversation": 1042,
                                                  "content": "Hello"}, headers=headers)  # fmt: skip
    other = await client.post("/outbound", json={"account": 3, "conversation": 1042,
                                                 "content": "Bye"}, headers=headers)  # fmt: skip
    assert first.status_code == 202 and other.status_code == 422
    assert "another body" in other.json()["error"]
    assert len(await entries(redis, topology, "outbound")) == 1
