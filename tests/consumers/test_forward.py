"""The forward group in-process, on real Redis and PostgreSQL: the real Forwarder, Runner,
GraphClient and AppClient, with the Graph API and the worker apps behind httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from consumers import egress, forward, signing
from consumers.appclient import AppClient
from consumers.forward import Forwarder
from consumers.graph import GraphClient
from consumers.store import Store
from consumers.store.apps import AppSQL
from consumers.store.forwards import Forward
from ingress import events
from ingress.settings import Secret, Settings
from ingress.topology import Topology
from tests import chatwoot, meta
from tests.pipeline import feed, rows, xadd, xrange

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
FORWARDS = "SELECT comment_key, owner_id, app, outcome, detail FROM meta_forwards ORDER BY 1"


class World:
    """Graph's media → owner table and what each app answers, and what both were asked."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {"10": "1001", "20": "2002"}
        self.graph_answers: list[httpx.Response] = []  # served first, one per call
        self.graph_calls: list[str] = []
        self.app_answers: dict[str, list[httpx.Response]] = {}
        self.received: list[tuple[str, httpx.Request, bytes]] = []

    def graph(self, request: httpx.Request) -> httpx.Response:
        media = request.url.path.rsplit("/", 1)[1]
        self.graph_calls.append(media)
        if self.graph_answers:
            return self.graph_answers.pop(0)
        if media not in self.owners:
            body = {"error": {"message": "does not exist", "type": "GraphMethodException",
                              "code": 100}}  # fmt: skip
            return httpx.Response(400, json=body)
        return httpx.Response(200, json={"owner": {"id": self.owners[media]}, "id": media})

    def app(self, request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        self.received.append((name, request, request.content))
        queued = self.app_answers.get(name)
        return queued.pop(0) if queued else httpx.Response(200, json={})

    def bodies(self, name: str) -> list[bytes]:
        return [body for app, _, body in self.received if app == name]


async def public(host: str, port: int) -> Sequence[str]:
    return ["93.184.216.34"]  # every app host resolves to a public address: no DNS in tests


@pytest.fixture
async def world() -> World:
    return World()


@pytest.fixture
async def forwarder(
    redis: aioredis.Redis, store: Store, topology: Topology, world: World
) -> AsyncIterator[Forwarder]:
    async with store.transaction() as tx:
        for name, owner in (("shop", "1001"), ("blog", "2002")):
            await AppSQL(tx.conn).add_app(name, f"https://{name}.example/hook/{name}", SECRET,
                                          timeout_s=5, enabled=True)  # fmt: skip
            await tx.map_owner(owner, name)
    graph = GraphClient("https://graph.test", Secret(meta.ACCESS_TOKEN), version="v21.0",
                        transport=httpx.MockTransport(world.graph))  # fmt: skip
    apps = AppClient(policy=egress.Policy(), resolve=public,
                     transport=httpx.MockTransport(world.app))  # fmt: skip
    async with graph, apps:
        owners = forward.Owners(redis, topology, graph.owner)
        yield Forwarder(store, owners, forward.poster(apps, clock=lambda: 1_800_000))


async def drain(
    redis: aioredis.Redis,
    topology: Topology,
    forwarder: Forwarder,
    *,
    claim_idle_ms: int = 60_000,
    max_deliveries: int = 8,
) -> None:
    """Run the forward group until nothing is left (a fresh runner: with a short idle time,
    what failed before is reclaimed, as after `claim_idle_ms` in production)."""
    if claim_idle_ms < 60_000:
        await asyncio.sleep(claim_idle_ms / 1000 + 0.01)
    spec = msgspec.structs.replace(
        topology.forward, claim_idle_ms=claim_idle_ms, max_deliveries=max_deliveries
    )
    runner = forward.runner(redis, msgspec.structs.replace(topology, forward=spec), forwarder)
    await runner.drain()


async def publish(redis: aioredis.Redis, topology: Topology, body: bytes) -> str:
    return await xadd(redis, topology.key("events"), events.encode(meta.entry(body)))


async def test_each_app_gets_only_its_own_comments_signed(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """A batch with comments on two owners' media: each mapped app gets one POST holding
    only its comment, signed with its secret under a stable webhook id."""
    body = meta.webhook(meta.change("10", "100"), meta.change("20", "200"))
    await publish(redis, topology, body)
    await drain(redis, topology, forwarder)
    [shop] = world.bodies("shop")
    [blog] = world.bodies("blog")
    assert [c["value"]["id"] for e in json.loads(shop)["entry"] for c in e["changes"]] == ["100"]
    assert [c["value"]["id"] for e in json.loads(blog)["entry"] for c in e["changes"]] == ["200"]
    _, request, sent = world.received[0]
    headers = request.headers
    assert headers["webhook-timestamp"] == "1800000"
    assert headers["webhook-signature"] == signing.sign(
        SECRET, headers["webhook-id"], 1_800_000, sent
    )
    assert await rows(store, FORWARDS) == [
        {"comment_key": "comments:100", "owner_id": "1001", "app": "shop",
         "outcome": "forwarded", "detail": None},
        {"comment_key": "comments:200", "owner_id": "2002", "app": "blog",
         "outcome": "forwarded", "detail": None},
    ]  # fmt: skip


async def test_owners_are_cached_under_the_events_hash_tag(
    redis: aioredis.Redis, topology: Topology, forwarder: Forwarder, world: World
) -> None:
    """The second comment on the same media asks Graph nothing; the cached owner sits in the
    events stream's Cluster slot, with a TTL."""
    await publish(redis, topology, meta.comment("10", "101"))
    await publish(redis, topology, meta.comment("10", "102"))
    await drain(redis, topology, forwarder)
    assert world.graph_calls == ["10"]
    key = f"{{{topology.key('events')}}}:meta:owner:10"
    assert await redis.get(key) == b"1001"
    assert 0 < await redis.ttl(key) <= topology.forward.owner_cache_s
    assert len(world.bodies("shop")) == 2


async def test_a_rate_limited_lookup_is_tried_again_and_sends_once(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """Graph's rate limit (code 4) leaves the entry pending, nothing sent; the next delivery
    forwards it, once."""
    limited = {"error": {"message": "limit", "type": "OAuthException", "code": 4}}
    world.graph_answers.append(httpx.Response(400, json=limited))
    await publish(redis, topology, meta.comment("10", "103"))
    await drain(redis, topology, forwarder)
    assert world.bodies("shop") == [] and await rows(store, FORWARDS) == []
    await drain(redis, topology, forwarder, claim_idle_ms=10)
    assert len(world.bodies("shop")) == 1
    assert await xrange(redis, topology.key("dead")) == []


async def test_an_app_that_fails_then_answers_gets_it_once_per_success(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """Two apps, one answering 503 first: the other is not sent again when the entry is
    retried; the failing one gets it on the retry, under the same webhook id."""
    world.app_answers["blog"] = [httpx.Response(503)]
    await publish(redis, topology, meta.webhook(meta.change("10", "104"), meta.change("20", "204")))
    await drain(redis, topology, forwarder)
    await drain(redis, topology, forwarder, claim_idle_ms=10)
    assert (len(world.bodies("shop")), len(world.bodies("blog"))) == (1, 2)
    blog_ids = {r.headers["webhook-id"] for app, r, _ in world.received if app == "blog"}
    assert len(blog_ids) == 1
    assert [r["outcome"] for r in await rows(store, FORWARDS)] == ["forwarded", "forwarded"]


async def test_an_app_refusal_and_a_graph_refusal_are_dead_lettered_with_the_reason(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """An app answering 422, and a media Graph does not know (code 100): the comments are
    recorded dead with the reason, and the webhook goes to the dead letters naming both."""
    world.app_answers["shop"] = [httpx.Response(422, text="bad")]
    await publish(redis, topology, meta.webhook(meta.change("10", "105"), meta.change("99", "905")))
    await drain(redis, topology, forwarder)
    found = {r["comment_key"]: r for r in await rows(store, FORWARDS)}
    assert found["comments:105"]["outcome"] == "dead" and "422" in found["comments:105"]["detail"]
    assert "Graph error code 100" in found["comments:905"]["detail"]
    [(_, dead)] = await xrange(redis, topology.key("dead"))
    assert dead[b"group"] == b"forward" and dead[b"reason"] == b"permanent"
    assert b"Graph error code 100" in dead[b"error"] and b"422" in dead[b"error"]


async def test_unmapped_disabled_and_unregistered_are_ignored_with_the_reason(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """No app for the owner, an app switched off, an app since removed: recorded `ignored`,
    naming the owner (an operator maps it and replays), no dead letter, nothing sent."""
    world.owners.update({"30": "3003", "40": "4004", "50": "5005"})
    async with store.transaction() as tx:
        await AppSQL(tx.conn).add_app("off", "https://off.example/x", SECRET, timeout_s=5,
                                      enabled=False)  # fmt: skip
        await tx.map_owner("4004", "off")
        await tx.map_owner("5005", "gone")
    body = meta.webhook(
        meta.change("30", "300"), meta.change("40", "400"), meta.change("50", "500")
    )
    await publish(redis, topology, body)
    await drain(redis, topology, forwarder)
    details = {r["comment_key"]: (r["outcome"], r["detail"]) for r in await rows(store, FORWARDS)}
    assert details == {
        "comments:300": ("ignored", "owner 3003 is mapped to no app"),
        "comments:400": ("ignored", "app off (owner 4004) is disabled"),
        "comments:500": ("ignored", "app gone (owner 5005) is not registered"),
    }
    assert world.received == [] and await xrange(redis, topology.key("dead")) == []


async def test_other_entries_are_acknowledged_untouched(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """Chatwoot's webhooks on the same stream are persist's: the forward group acks them
    and asks nobody anything."""
    await feed(redis, topology, chatwoot.payload("message_created__api_channel_incoming"))
    await drain(redis, topology, forwarder)
    assert world.graph_calls == [] and world.received == []
    assert await rows(store, FORWARDS) == []
    pending: Any = await redis.xpending(topology.key("events"), forward.GROUP)
    assert pending["pending"] == 0


async def test_exhausted_retries_record_the_comments_dead(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    forwarder: Forwarder,
    world: World,
) -> None:
    """An app that keeps failing: after max_deliveries the webhook is dead-lettered and its
    comments recorded dead with that reason (a dlq replay later sends them)."""
    world.app_answers["shop"] = [httpx.Response(500) for _ in range(20)]
    await publish(redis, topology, meta.comment("10", "106"))
    for _ in range(4):
        await drain(redis, topology, forwarder, claim_idle_ms=10, max_deliveries=2)
    [row] = await rows(store, FORWARDS)
    assert row["outcome"] == "dead" and row["detail"].startswith("max_deliveries")
    assert len(await xrange(redis, topology.key("dead"))) == 1


async def test_without_meta_settings_there_is_no_forward_group(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """No META_ACCESS_TOKEN: no runner, so no group that would hold the stream untrimmed."""
    settings = Settings.from_env({"META_APP_SECRET": meta.APP_SECRET})
    async with forward.opened(settings, topology, redis, store) as built:
        assert built is None
    groups: Any = (
        await redis.xinfo_groups(topology.key("events"))
        if await redis.exists(topology.key("events"))
        else []
    )
    assert forward.GROUP not in [g["name"].decode() for g in groups]


async def test_a_forwarded_comment_is_never_recorded_otherwise(store: Store) -> None:
    """A late attempt (a reclaimed duplicate that failed) cannot turn `forwarded` back into
    `dead` or `ignored`: the comment would be sent again by a replay."""
    row = Forward(comment_key="comments:1", stream_id="1-0", delivery_id="meta:a",
                  outcome="forwarded", owner_id="1001", app="shop")  # fmt: skip
    async with store.transaction() as tx:
        await tx.record_forward(row)
        await tx.record_forward(msgspec.structs.replace(row, outcome="dead", detail="late"))
        assert await tx.forwarded(["comments:1", "comments:2"]) == {"comments:1"}
    [found] = await rows(store, FORWARDS)
    assert (found["outcome"], found["detail"]) == ("forwarded", None)
