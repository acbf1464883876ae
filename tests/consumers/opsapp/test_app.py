"""The ops app in-process (ASGI) over real Redis and PostgreSQL: the guard, the JSON views,
the page, escaping, and dead-letter replay with its CSRF defences."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager

from consumers.opsapp.app import create_app
from consumers.opsapp.guard import LOCAL_HEADER
from consumers.store import Store
from ingress.settings import Secret, Settings
from ingress.topology import Topology
from tests import chatwoot
from tests.consumers.opsapp import story
from tests.consumers.test_deliver import client
from tests.pipeline import persist, xrange

__all__ = ["client"]  # the fixture

TOKEN = "ops-test-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}
# The fixtures' Chatwoot clock: their messages were created on 2026-06-18 around 09:43.
FIXTURE_NOW = dt.datetime(2026, 6, 18, 10, 0, tzinfo=dt.UTC)
Ops = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def ops(redis_url: str, database_url: str, topology: Topology) -> Ops:
    @asynccontextmanager
    async def opened(
        token: str | None = TOKEN, clock: Callable[[], dt.datetime] | None = None
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(redis_url=redis_url, database_url=database_url,
                            ops_token=Secret(token) if token else None)  # fmt: skip
        app = create_app(settings, topology, clock=clock or (lambda: dt.datetime.now(dt.UTC)),
                         form_key=b"k" * 32)  # fmt: skip
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ops.test") as c:
                yield c

    return opened


async def signed_in(client: httpx.AsyncClient) -> None:
    answer = await client.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303 and "sb_ops" in client.cookies


@pytest.mark.parametrize("path", ["/api/streams", "/api/dead", "/api/conversations/3/1044"])
async def test_api_needs_the_bearer_token(
    ops: Ops, redis: aioredis.Redis, store: Store, path: str
) -> None:
    """Without the token, or with a wrong one, the JSON views answer 401."""
    async with ops() as client:
        refused = await client.get(path)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.get(path, headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await client.get(path, headers=BEARER)).status_code in (200, 404)


async def test_the_page_asks_for_the_token_once(
    ops: Ops, redis: aioredis.Redis, store: Store
) -> None:
    """A browser is sent to the sign-in form; a wrong token is refused; the right one opens
    every page (an HttpOnly, SameSite=Strict session cookie, not the token itself)."""
    async with ops() as client:
        first = await client.get("/")
        assert (first.status_code, first.headers["location"]) == (303, "/login")
        assert (await client.post("/login", data={"token": "nope"})).status_code == 401
        answer = await client.post("/login", data={"token": TOKEN})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
        health = await client.get("/")
        assert health.status_code == 200 and 'id="streams"' in health.text


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        pytest.param("/api/conversations?account=x", "account", id="account"),
        pytest.param("/api/conversations?status=lost", "status", id="status"),
        pytest.param("/api/conversations?handler=robot", "handler", id="handler"),
        pytest.param("/api/conversations?limit=5000", "limit", id="limit"),
        pytest.param("/api/conversations?q=" + "x" * 300, "q", id="search"),
        pytest.param("/api/webhooks?outcome=lost", "outcome", id="outcome"),
        pytest.param("/api/webhooks?since=yesterday", "since", id="since"),
        pytest.param("/api/messages/hourly?hours=0", "hours", id="hours"),
        pytest.param("/api/dead/not-an-id", "entry", id="entry"),
        pytest.param("/api/conversations/3/x", "conversation", id="conversation-id"),
    ],
)
async def test_bad_parameters_are_400_naming_them(
    ops: Ops, redis: aioredis.Redis, store: Store, path: str, parameter: str
) -> None:
    """A bad query or path parameter is answered 400 with its name."""
    async with ops() as client:
        answer = await client.get(path, headers=BEARER)
    assert answer.status_code == 400
    assert answer.json()["parameter"] == parameter


async def test_a_bad_parameter_on_the_page_is_a_400_page(
    ops: Ops, redis: aioredis.Redis, store: Store
) -> None:
    """The page answers a bad filter with a 400 page naming it."""
    async with ops() as client:
        await signed_in(client)
        answer = await client.get("/conversations?status=<b>lost</b>")
    assert answer.status_code == 400 and "status: must be one of" in answer.text


async def test_customer_content_is_escaped_everywhere(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Markup in a message, a contact name or a search is shown as text, never run; the page
    also forbids scripts outright (Content-Security-Policy)."""
    data = chatwoot.payload("message_created__whatsapp_incoming_phone")
    data["content"] = "<script>alert('customer')</script>"
    data["conversation"]["meta"]["sender"]["name"] = '"><img src=x onerror=alert(1)>'
    data["sender"]["name"] = '"><img src=x onerror=alert(1)>'
    await persist(redis, store, topology, data)
    async with ops() as client:
        await signed_in(client)
        pages = [
            await client.get("/conversations/3/1044"),
            await client.get("/conversations", params={"q": "<script>x</script>"}),
            await client.get("/conversations"),
            await client.get("/webhooks", params={"event": "<script>"}),
        ]
    timeline, searched, listed, webhooks = pages
    assert "&lt;script&gt;alert(&#x27;customer&#x27;)&lt;/script&gt;" in timeline.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in listed.text
    for answer in pages:
        assert answer.status_code == 200
        assert "<script" not in answer.text and "<img" not in answer.text
        assert "script-src" not in answer.headers["content-security-policy"]
        assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert 'value="&lt;script&gt;x&lt;/script&gt;"' in searched.text


async def test_conversations_filter_and_search_by_contact(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Filters by account, inbox, status and handler; search in the contact's name, email,
    phone or identifier (a substring, any case, wildcards taken literally)."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone",
                  "message_created__webwidget_incoming_with_email")  # fmt: skip

    async def found(**query: str) -> list[int]:
        answer = await web.get("/api/conversations", params=query, headers=BEARER)
        assert answer.status_code == 200, answer.text
        return sorted(c["chatwoot_conversation_id"] for c in answer.json())

    async with ops() as web:
        everything = await found()
        assert len(everything) == 2 and 1044 in everything
        assert await found(q="aisha") == [1044]
        assert await found(q="98765") == [1044]
        assert await found(q="%") == []
        assert await found(inbox="12") == [1044]
        assert await found(account="4") == []
        assert await found(handler="human") == []
        assert sorted(await found(handler="bot")) == everything
        webwidget = [c for c in everything if c != 1044]
        email = (await web.get("/api/conversations", params={"q": "@"}, headers=BEARER)).json()
        assert [c["chatwoot_conversation_id"] for c in email] == webwidget


async def test_timeline_webhooks_and_counts_as_json(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology, fake: object,
    client: Any,
) -> None:  # fmt: skip
    """A conversation's timeline, the recent webhooks by outcome, messages per hour."""
    await story.tell(redis, store, topology, client)
    async with ops(clock=lambda: FIXTURE_NOW) as ops_client:
        timeline = await ops_client.get("/api/conversations/3/1044", headers=BEARER)
        missing = await ops_client.get("/api/conversations/3/999", headers=BEARER)
        dead = await ops_client.get("/api/webhooks?outcome=dead", headers=BEARER)
        hourly = await ops_client.get("/api/messages/hourly?hours=2", headers=BEARER)
    kinds = {e["kind"] for e in timeline.json()["events"]}
    assert kinds == {"webhook", "message", "turn", "reply", "handler", "dead"}
    assert missing.status_code == 404
    assert [w["delivery_id"] for w in dead.json()] == ["broken-1"]
    counts = {(h["direction"], h["messages"]) for h in hourly.json()}
    assert counts == {("inbound", 1), ("outbound", 1)}


async def test_health_shows_streams_dead_letters_webhooks_and_latency(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology, fake: object,
    client: Any,
) -> None:  # fmt: skip
    """Pipeline health: streams with their groups, the dead count, webhooks per minute by
    outcome over the last hour, reply latency (queued → posted) of the last hour."""
    await story.tell(redis, store, topology, client)
    async with ops() as ops_client:
        health = (await ops_client.get("/api/health", headers=BEARER)).json()
        await signed_in(ops_client)
        page = (await ops_client.get("/")).text
    keys = {s["key"] for s in health["streams"]}
    assert topology.key("events") in keys and topology.key("outbound") in keys
    assert health["dead"] == 1
    outcomes = {(w["outcome"], w["webhooks"]) for w in health["webhooks_per_minute"]}
    assert sum(n for o, n in outcomes if o == "applied") == 2
    assert sum(n for o, n in outcomes if o == "dead") == 1
    assert health["latency"]["queued_to_posted"]["replies"] == 1
    assert health["latency"]["queued_to_posted"]["p50_s"] >= 0
    assert 'id="webhooks-per-minute"' in page and 'id="latency"' in page


async def test_replay_from_the_page_needs_the_confirmation_form(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """The Replay button leads to a confirm page; only its form, from this origin, replays:
    no form token, another site's origin or another process's form are refused."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    await story.dead_letter(redis, store, topology)
    [(entry, _)] = await xrange(redis, topology.key("dead"))
    events_before = int(await redis.xlen(topology.key("events")))
    async with ops() as client:
        await signed_in(client)
        listed = await client.get("/dead")
        assert f'href="/dead/{entry}/replay"' in listed.text
        confirm = await client.get(f"/dead/{entry}/replay")
        match = re.search(r'name="form_token" value="([0-9a-f]+)"', confirm.text)
        assert match is not None
        token = match.group(1)
        path = f"/dead/{entry}/replay"
        refused = [
            await client.post(path, data={}),
            await client.post(path, data={"form_token": "0" * 64}),
            await client.post(
                path, data={"form_token": token}, headers={"origin": "https://evil.example"}
            ),  # fmt: skip
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
        assert int(await redis.xlen(topology.key("dead"))) == 1
        done = await client.post(path, data={"form_token": token},
                                 headers={"origin": "http://ops.test"})  # fmt: skip
        assert done.status_code == 303 and done.headers["location"].startswith("/dead?done=")
        shown = await client.get(done.headers["location"])
        assert f"{entry} replayed: republished" in shown.text
    assert int(await redis.xlen(topology.key("dead"))) == 0
    assert int(await redis.xlen(topology.key("events"))) == events_before + 1


async def test_api_replay_and_purge_need_the_header(
    ops: Ops, redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Actions of the JSON API need the bearer header: a session cookie alone (what a
    cross-site form would ride on) is refused. Open (no OPS_TOKEN), a custom header."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    await story.dead_letter(redis, store, topology)
    await story.dead_letter(redis, store, topology)
    first, second = [i for i, _ in await xrange(redis, topology.key("dead"))]
    async with ops() as client:
        await signed_in(client)
        assert (await client.post(f"/api/dead/{first}/purge")).status_code == 403
        shown = await client.get(f"/api/dead/{first}", headers=BEARER)
        assert shown.json()["original"]["delivery"] == "broken-1"
        purged = await client.post(f"/api/dead/{first}/purge", headers=BEARER)
        assert purged.json() == {"entry": first, "purged": 1}
        again = await client.post(f"/api/dead/{first}/purge", headers=BEARER)
        assert again.status_code == 404
    async with ops(token=None) as client:
        assert (await client.post(f"/api/dead/{second}/replay")).status_code == 403
        replayed = await client.post(f"/api/dead/{second}/replay", headers={LOCAL_HEADER: "1"})
        assert replayed.json()["outcome"] == "republished"
    assert int(await redis.xlen(topology.key("dead"))) == 0
