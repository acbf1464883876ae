"""`/webhooks/meta`: the subscription challenge, and signed Instagram events into sb:events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from consumers.embedded import free_port
from ingress import events, meta
from ingress import topology as topology_mod
from ingress.app import create_app
from ingress.errors import ConfigError
from ingress.topology import Topology
from tests import meta as meta_bodies
from tests.ingress.test_app import Client, client_for, entries, make_settings
from tests.services import ROOT

PATH = "/webhooks/meta"
APP_SECRET = meta_bodies.APP_SECRET
VERIFY = meta_bodies.VERIFY_TOKEN
JSON = {"content-type": "application/json"}
comment = meta_bodies.comment
signed = meta_bodies.headers


@pytest.fixture
async def client(topology: Topology, redis: aioredis.Redis) -> AsyncIterator[Client]:
    settings = make_settings(
        META_APP_SECRET=APP_SECRET, META_VERIFY_TOKEN=VERIFY, MAX_BODY_BYTES="65536"
    )
    async for c in client_for(settings, topology, redis):
        yield c


async def test_challenge_is_echoed_for_the_verify_token(client: Client) -> None:
    """Meta's subscription check with our token gets its challenge back, as plain text."""
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
    response = await client.get(PATH, params=params)
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"hub.mode": "subscribe", "hub.verify_token": "wrong"}, id="wrong-token"),
        pytest.param({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY}, id="wrong-mode"),
        pytest.param({"hub.mode": "subscribe"}, id="no-token"),
        pytest.param({"hub.mode": "subscribe", "hub.verify_token": "v\u00e9rify"}, id="non-ascii"),
        pytest.param(
            {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "<script>"},
            id="markup-challenge",
        ),
    ],
)
async def test_challenge_is_refused_otherwise(client: Client, params: dict[str, str]) -> None:
    """A wrong mode or token (or a challenge that is not a plain token) gets 403, and the
    token given is not logged."""
    with capture_logs() as logs:
        response = await client.get(PATH, params={"hub.challenge": "42", **params})
    assert response.status_code == 403
    given = params.get("hub.verify_token")
    assert VERIFY not in repr(logs) and (not given or given not in repr(logs))


async def test_signed_comment_is_stored_as_a_meta_entry(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A signed comment is in sb:events byte for byte, source=meta, with a delivery id that
    is a digest of the body."""
    body = comment()
    response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    [(entry_id, fields)] = await entries(redis, topology, "events")
    assert response.json() == {"entry": entry_id.decode(), "spooled": False, "duplicate": False}
    entry = events.decode(events.EventEntry, fields)
    assert (entry.source, entry.event, entry.signed, entry.body) == (
        "meta",
        "meta.instagram",
        True,
        body,
    )
    assert entry.delivery == meta.delivery_id(body) and entry.delivery.startswith("meta:")
    assert (entry.account, entry.conversation) == (None, None)


async def test_the_same_webhook_twice_is_stored_once(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """Meta retries with the same bytes: the second is answered 200 as a duplicate; another
    comment is a new entry."""
    body = comment()
    first = await client.post(PATH, content=body, headers=signed(body))
    again = await client.post(PATH, content=body, headers=signed(body))
    other = comment(comment_id="18000000000000002")
    third = await client.post(PATH, content=other, headers=signed(other))
    assert [r.json()["duplicate"] for r in (first, again, third)] == [False, True, False]
    assert len(await entries(redis, topology, "events")) == 2


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param("sha256=" + "0" * 64, id="wrong"),
        pytest.param("sha256=00", id="short"),
        pytest.param("sha1=" + "0" * 40, id="sha1"),
        pytest.param("sha256=" + "\u00e9" * 64, id="latin-1"),
        pytest.param("", id="empty"),
    ],
)
async def test_bad_signature_is_401_and_nothing_is_written(
    client: Client, redis: aioredis.Redis, topology: Topology, header: str | None
) -> None:
    """Any missing, malformed, non-ASCII or wrong signature is refused with 401, never a 500,
    and nothing reaches the stream."""
    body = comment()
    headers: dict[str, Any] = dict(JSON)
    if header is not None:
        headers["x-hub-signature-256"] = header.encode("latin-1")
    response = await client.post(PATH, content=body, headers=headers)
    assert response.status_code == 401
    assert await entries(redis, topology, "events") == []


async def test_signed_with_another_secret_is_401(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """The Chatwoot secret does not sign Meta webhooks: only META_APP_SECRET does."""
    body = comment()
    response = await client.post(PATH, content=body, headers=signed(body, "rotated-out"))
    assert response.status_code == 401
    assert await entries(redis, topology, "events") == []


@pytest.mark.parametrize("body", [b"[1, 2]", b"{not json", b'"instagram"', b""])
async def test_signed_non_object_is_400(
    client: Client, redis: aioredis.Redis, topology: Topology, body: bytes
) -> None:
    """A signed body that is not a JSON object gets 400 and nothing is written."""
    response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 400
    assert await entries(redis, topology, "events") == []


async def test_oversized_body_is_413(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """The same size cap as the Chatwoot path."""
    body = b'{"object": "instagram", "pad": "' + b"x" * 70_000 + b'"}'
    response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 413
    assert await entries(redis, topology, "events") == []


async def test_odd_object_is_kept(
    client: Client, redis: aioredis.Redis, topology: Topology
) -> None:
    """A signed object whose `object` is not a name is still stored (Meta will not resend):
    the forward group decides what it is."""
    body = b'{"object": {"x": 1}, "entry": []}'
    response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 200
    [(_, fields)] = await entries(redis, topology, "events")
    assert events.decode(events.EventEntry, fields).event == "meta"


async def test_off_without_app_secret(topology: Topology, redis: aioredis.Redis) -> None:
    """No META_APP_SECRET: both methods answer 404 and nothing is written."""
    async for client in client_for(make_settings(META_VERIFY_TOKEN=VERIFY), topology, redis):
        body = comment()
        post = await client.post(PATH, content=body, headers=signed(body))
        params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1"}
        get = await client.get(PATH, params=params)
        assert (post.status_code, get.status_code) == (404, 404)
    assert await entries(redis, topology, "events") == []


async def test_no_verify_token_refuses_the_challenge_and_warns(
    topology: Topology, redis: aioredis.Redis
) -> None:
    """An app secret without a verify token: the challenge is refused, and a warning at
    start says why."""
    with capture_logs() as logs:
        async for client in client_for(make_settings(META_APP_SECRET=APP_SECRET), topology, redis):
            params = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
            response = await client.get(PATH, params=params)
            assert response.status_code == 403
    assert any(e["event"] == "meta.no_verify_token" for e in logs)


async def test_a_comment_is_spooled_while_redis_is_down_then_stored(
    tmp_path: Path, topology: Topology, redis: aioredis.Redis
) -> None:
    """Redis unreachable: the signed comment is answered 200 from the spool (Meta would
    otherwise retry for 36 hours), and reaches sb:events as source=meta once Redis is back."""
    spool = tmp_path / "events.spool"
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "META_APP_SECRET": APP_SECRET}
    body = comment()
    down = create_app(make_settings(**env), topology, spool_path=spool)
    async with LifespanManager(down) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            answer = await client.post(PATH, content=body, headers=signed(body))
    assert (answer.status_code, answer.json()["spooled"]) == (200, True)
    up = create_app(make_settings(META_APP_SECRET=APP_SECRET), topology, redis=redis,
                    spool_path=spool)  # fmt: skip
    async with LifespanManager(up):
        for _ in range(100):
            if await entries(redis, topology, "events"):
                break
            await asyncio.sleep(0.05)
    [(_, fields)] = await entries(redis, topology, "events")
    entry = events.decode(events.EventEntry, fields)
    assert (entry.source, entry.body, entry.delivery) == ("meta", body, meta.delivery_id(body))


def test_meta_settings_are_read_and_kept_secret() -> None:
    """The META_* variables are read once; the secrets never show in a repr; a Graph URL
    that is not http(s) is a configuration error naming the variable."""
    settings = make_settings(
        META_APP_SECRET=APP_SECRET, META_ACCESS_TOKEN="EAAG-tok", META_GRAPH_URL="http://g:1/"
    )
    assert settings.meta_graph_url == "http://g:1"
    assert APP_SECRET not in repr(settings) and "EAAG-tok" not in repr(settings)
    assert make_settings().meta_graph_url == "https://graph.facebook.com"
    with pytest.raises(ConfigError) as caught:
        make_settings(META_GRAPH_URL="graph.facebook.com")
    assert any("META_GRAPH_URL" in problem for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        pytest.param("graph_version: '21'", "graph_version", id="version"),
        pytest.param("graph_version: v21.0/../me", "graph_version", id="version-path"),
        pytest.param("owner_cache_s: 0", "owner_cache_s", id="cache"),
        pytest.param("retry: 3", "retry", id="unknown-key"),
    ],
)
def test_forward_settings_in_streams_yaml_are_checked(yaml: str, problem: str) -> None:
    """The `forward:` section of streams.yaml: a Graph version that is not vN.N (it goes
    into a URL path), a zero cache time or an unknown key is refused at start."""
    raw = (ROOT / "streams.yaml").read_bytes() + f"\n  {yaml}\n".encode()
    with pytest.raises(ConfigError) as caught:
        topology_mod.parse(raw)
    assert problem in str(caught.value.problems)
