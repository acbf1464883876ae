"""The `forward` group: each Instagram comment of a Meta webhook goes to the worker app mapped
to its media's owner, as the original webhook, signed with the app's secret.

Per entry: the comments not forwarded yet; their media owners (Redis cache, else the Graph
API); the app mapped to each owner; one signed POST of the raw body per app. Each comment's
outcome is in `meta_forwards` (forwarded, ignored with the reason, dead). A failure worth
another try leaves the entry pending, so the runner tries again after `claim_idle_ms` (what
was forwarded meanwhile is not sent again); a refusal dead-letters it, naming the error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

from consumers import comments, decisions, egress
from consumers.appclient import AppClient
from consumers.comments import Comment
from consumers.errors import HandlerError, PermanentError, RetryableError
from consumers.graph import GraphClient, GraphError
from consumers.runner import Runner, StreamEntry
from consumers.store import Store
from consumers.store.apps import AppSQL, WorkerApp
from consumers.store.forwards import Forward
from ingress import events
from ingress.errors import EntryDecodeError
from ingress.settings import Settings
from ingress.topology import Topology

log = structlog.get_logger("forward")

SOURCE = "meta"  # the entries this group handles (ingress/meta.py); it acks any other
GROUP = "forward"

# Asks the Graph API for a media's owner (GraphClient.owner), raising GraphError.
Lookup = Callable[[str], Awaitable[str]]
# POSTs `body` to an app, signed with its secret under `msg_id` (AppClient.post), raising
# a HandlerError (AppError) that says whether to try again.
Post = Callable[[WorkerApp, str, bytes], Awaitable[None]]


def by_delivery(entry: StreamEntry) -> bytes:
    """Webhooks are independent of each other: only one webhook's redeliveries keep order."""
    return entry.fields.get(b"delivery", b"")


class Owners:
    """Media owner ids, cached in Redis under the events stream's hash tag (one Cluster slot
    with the stream): owners rarely change, and Graph's rate limits are per token."""

    def __init__(self, redis: aioredis.Redis, topology: Topology, lookup: Lookup) -> None:
        self.redis = redis
        self.prefix = f"{{{topology.key('events')}}}:meta:owner:"
        self.ttl_s = topology.forward.owner_cache_s
        self.lookup = lookup

    async def of(self, media_id: str) -> str:
        key = self.prefix + media_id  # a Graph id: digits only (comments.parse checks)
        cached: Any = await self.redis.get(key)
        if cached is not None:
            return str(cached.decode() if isinstance(cached, bytes) else cached)
        owner = await self.lookup(media_id)
        await self.redis.set(key, owner, ex=self.ttl_s)
        return owner


class _Outcomes:
    """What one entry's comments came to, recorded together at the end of each step."""

    def __init__(self, stream_id: str, delivery: str) -> None:
        self.stream_id = stream_id
        self.delivery = delivery
        self.rows: list[Forward] = []
        self.retry: HandlerError | None = None
        self.refused: list[str] = []

    def add(
        self,
        comment: Comment,
        outcome: str,
        detail: str | None = None,
        *,
        owner: str | None = None,
        app: str | None = None,
    ) -> None:
        self.rows.append(
            Forward(
                comment_key=comment.key,
                stream_id=self.stream_id,
                delivery_id=self.delivery,
                media_id=comment.media_id,
                owner_id=owner,
                app=app,
                outcome=outcome,
                detail=detail,
            )
        )
        if outcome == "dead" and detail:
            self.refused.append(detail)


class Forwarder:
    """The handler of the forward group (and its `on_dead`)."""

    def __init__(self, store: Store, owners: Owners, post: Post) -> None:
        self.store = store
        self.owners = owners
        self.post = post

    async def __call__(self, entry: StreamEntry) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(entry=entry.id)
        event = events.decode(events.EventEntry, entry.fields)
        if event.source != SOURCE:
            return  # Chatwoot's and the backfill's: persist's business
        structlog.contextvars.bind_contextvars(delivery=event.delivery)
        try:
            parsed = comments.parse(event.body)
        except comments.Unreadable as exc:
            raise PermanentError(str(exc)) from None
        async with self.store.transaction() as tx:
            done = await tx.forwarded([c.key for c in parsed.comments])
        todo = [c for c in parsed.comments if c.key not in done]
        outcomes = _Outcomes(entry.id, event.delivery)
        if todo:
            await self._forward(todo, event, outcomes)
        await self._record(outcomes)
        log.info(
            "webhook.routed",
            comments=len(parsed.comments),
            already=len(done),
            unusable=parsed.unusable,  # ids and what is missing: no text of the comment
            outcomes=[f"{r.comment_key}={r.outcome}" for r in outcomes.rows],
        )
        if outcomes.retry is not None:
            raise RetryableError(str(outcomes.retry))
        if outcomes.refused:
            raise PermanentError("; ".join(outcomes.refused)[:2000])

    async def _forward(
        self, todo: list[Comment], event: events.EventEntry, outcomes: _Outcomes
    ) -> None:
        owners: dict[str, str] = {}
        for comment in todo:
            try:
                owners[comment.key] = await self.owners.of(comment.media_id)
            except GraphError as exc:
                if exc.retryable:
                    # Nothing is sent until every owner is known: a retry asks only for
                    # what the cache lacks.
                    outcomes.retry = exc
                    return
                outcomes.add(comment, "dead", f"owner lookup: {exc}")
        plan = await self._plan(todo, owners, outcomes)
        for app, mine in plan:
            # The same id on every retry of this webhook to this app: the app can dedup.
            msg_id = f"{event.delivery}.{app.name}"
            body = comments.only(event.body, {c.key for c in mine})
            try:
                await self.post(app, msg_id, body)
            except HandlerError as exc:
                if exc.retryable:
                    outcomes.retry = outcomes.retry or exc
                    continue
                for comment in mine:
                    outcomes.add(comment, "dead", f"app {app.name}: {exc}",
                                 owner=owners[comment.key], app=app.name)  # fmt: skip
                continue
            for comment in mine:
                outcomes.add(comment, "forwarded", owner=owners[comment.key], app=app.name)

    async def _plan(
        self, todo: list[Comment], owners: dict[str, str], outcomes: _Outcomes
    ) -> list[tuple[WorkerApp, list[Comment]]]:
        """Which app gets which comments; the others recorded `ignored` with the reason (an
        operator can map the owner, or fix the app, and replay)."""
        async with self.store.transaction() as tx:
            mapped = await tx.apps_of(sorted(set(owners.values())))
            apps = {name: await AppSQL(tx.conn).get_app(name) for name in set(mapped.values())}
        plan: dict[str, tuple[WorkerApp, list[Comment]]] = {}
        for comment in todo:
            owner = owners.get(comment.key)
            if owner is None:
                continue  # its lookup failed for good: recorded dead
            name = mapped.get(owner)
            app = apps.get(name) if name is not None else None
            if name is None:
                outcomes.add(comment, "ignored", f"owner {owner} is mapped to no app", owner=owner)
            elif app is None:
                reason = f"app {name} (owner {owner}) is not registered"
                outcomes.add(comment, "ignored", reason, owner=owner, app=name)
            elif not app.enabled:
                reason = f"app {name} (owner {owner}) is disabled"
                outcomes.add(comment, "ignored", reason, owner=owner, app=name)
            else:
                plan.setdefault(name, (app, []))[1].append(comment)
        return list(plan.values())

    async def _record(self, outcomes: _Outcomes) -> None:
        if not outcomes.rows:
            return
        async with self.store.transaction() as tx:
            for row in outcomes.rows:
                await tx.record_forward(row)

    async def dead(self, entry: StreamEntry, dead: decisions.Dead) -> None:
        """The runner's `on_dead`: comments of a dead-lettered webhook not forwarded yet are
        recorded `dead` with the reason (a dead letter replayed later sends only those). A
        refusal (`permanent`) recorded each comment's own reason already."""
        if dead.reason == "permanent":
            return
        try:
            event = events.decode(events.EventEntry, entry.fields)
            parsed = comments.parse(event.body)
        except (EntryDecodeError, comments.Unreadable):
            return  # nothing to name: the dead letter itself holds the entry
        outcomes = _Outcomes(entry.id, event.delivery)
        for comment in parsed.comments:
            outcomes.add(comment, "dead", f"{dead.reason}: {dead.error}"[:2000])
        await self._record(outcomes)


def configured(settings: Settings) -> bool:
    """Meta webhooks are taken (META_APP_SECRET) and owners can be asked (META_ACCESS_TOKEN)."""
    return settings.meta_app_secret is not None and settings.meta_access_token is not None


@contextlib.asynccontextmanager
async def opened(
    settings: Settings,
    topology: Topology,
    redis: aioredis.Redis,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Runner | None]:
    """The forward group's runner with its Graph and app clients open; None (the group is
    not even created, so it never holds the events stream untrimmed) without Meta."""
    if not configured(settings):
        if settings.meta_app_secret is not None:
            log.error(
                "forward.off",
                detail="META_APP_SECRET is set but META_ACCESS_TOKEN is not: Meta webhooks are "
                "stored, but nothing forwards them until it is",
            )
        else:
            log.info("forward.off", detail="Meta is not configured (META_APP_SECRET)")
        yield None
        return
    assert settings.meta_access_token is not None
    spec = topology.forward
    policy = egress.Policy(
        allow_http=settings.allow_http_apps, allow_private=settings.allow_private_apps
    )
    async with (
        GraphClient(
            settings.meta_graph_url,
            settings.meta_access_token,
            version=spec.graph_version,
            timeout=spec.graph_timeout_ms / 1000,
        ) as graph,
        AppClient(policy=policy) as apps,
    ):
        forwarder = Forwarder(store, Owners(redis, topology, graph.owner), poster(apps, clock))
        yield runner(redis, topology, forwarder)


def poster(apps: AppClient, clock: Callable[[], float] = time.time) -> Post:
    """Posts with the app's own URL, secret and timeout."""

    async def post(app: WorkerApp, msg_id: str, body: bytes) -> None:
        await apps.post(
            app.url,
            app.secret.reveal(),
            msg_id=msg_id,
            timestamp=int(clock()),
            body=body,
            timeout_s=app.timeout_s,
        )

    return post


def runner(redis: aioredis.Redis, topology: Topology, forwarder: Forwarder) -> Runner:
    return Runner(
        redis,
        key=topology.key("events"),
        group=GROUP,
        spec=topology.forward.group(),
        dead_key=topology.key("dead"),
        metrics_key=topology.key("metrics"),
        partition=by_delivery,
        handler=forwarder,
        on_dead=forwarder.dead,
    )
