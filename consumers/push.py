"""The push group: turns POSTed to worker apps, signed, answered inline or later.

A turn entry of a route naming an `app` is only recorded (`pushes`, due now) before it is
acknowledged; the attempts run from that table, like the outbox's: `PushWorker` leases the due
pushes (SKIP LOCKED), POSTs each in a task of its own with no transaction open, and writes the
outcome. So a slow or failing app holds up neither another app nor another conversation, and a
process that dies mid-attempt leaves the push to be taken again when its lease ends. A push
whose conversation had a newer turn meanwhile is superseded, never sent.

Retries follow `delivery:` (schedule, jitter, Retry-After, max_attempts); a breaker per app
(`delivery.breaker`, kept in Redis so every process sees it) stops calling an app that keeps
failing. A push that fails for good is dead-lettered (`switchboard dlq replay` queues it again).
Inline replies go to `sb:outbound` with refs derived from the turn (see `inline.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers import backoff, egress, inline
from consumers.appclient import AppAnswer, AppClient
from consumers.backoff import Breaker
from consumers.counters import Counters
from consumers.errors import AppError
from consumers.polling import PollingWorker
from consumers.runner import Runner, StreamEntry
from consumers.store import Store, Tx
from consumers.store.pushes import ClaimedPush, NewPush, Push, PushSQL
from ingress import events
from ingress.settings import Settings
from ingress.topology import Topology

log = structlog.get_logger("push")

GROUP = "push"
# An attempt owns its push for the app's timeout plus this (the outcome's own writes).
LEASE_MARGIN_S = 30.0
# Pushes in flight per app before it is skipped in a claim (soft: one claim may add a batch).
PER_APP = 16
MAX_IN_FLIGHT = 128
# A disabled app's pushes, and an app's during an open breaker, wait in the table.


class Pusher:
    """The stream handler: record the push of a turn whose route names an app."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        *,
        stream: str,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.store = store
        self.topology = topology
        self.stream = stream  # the key of the turn stream this handler reads
        self.wake = wake
        self.clock = clock

    async def __call__(self, entry: StreamEntry) -> None:
        turn = events.decode(events.TurnEntry, entry.fields)
        route = self.topology.route_named(turn.route)
        if route is None or route.app is None:
            return  # a turn for agents reading the stream: nothing to push
        push = NewPush(
            turn=turn.turn,
            app=route.app,
            account_id=turn.account,
            conversation_id=turn.conversation,
            through=turn.through,
            stream=self.stream,
            stream_id=entry.id,
            # The turn entry's own JSON: the same thing agents read on the stream.
            body=events.json_encoder.encode(turn),
        )
        async with self.store.transaction() as tx:
            now = self.clock() if self.clock is not None else await tx.now()
            added = await PushSQL(tx.conn).open_push(push, now=now)
        log.info("push.recorded" if added else "push.already_recorded", turn=turn.turn,
                 app=route.app)  # fmt: skip
        self.wake()


class PushWorker(PollingWorker):
    """Runs the pushes the table says are due, each in its own task."""

    name = "push-attempts"

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        topology: Topology,
        client: AppClient,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        rand: Callable[[], float] = random.random,
        batch: int = 32,
    ) -> None:
        super().__init__()
        self.store = store
        self.redis = redis
        self.topology = topology
        self.client = client
        self.spec = topology.delivery
        self.clock = clock
        self.rand = rand
        self.batch = batch
        self.poll_s = self.spec.poll_ms / 1000
        self.outbound_key = topology.key("outbound")
        self.dead_key = topology.key("dead")
        self.breakers = Breakers(redis, f"{{{topology.key('turns')}}}:app-breakers")
        self.metrics = Counters(redis, metrics_key=topology.key("metrics"))
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def now(self, tx: Tx) -> dt.datetime:
        return self.clock() if self.clock is not None else await tx.now()

    async def step(self) -> int:
        """Claim the due pushes and start their attempts; how many were started."""
        free = MAX_IN_FLIGHT - len(self._tasks)
        if free <= 0:
            return 0
        async with self.store.transaction() as tx:
            now = await self.now(tx)
        skip = await self.breakers.open_apps(now.timestamp())
        skip += [app for app, n in self._in_flight.items() if n >= PER_APP]
        async with self.store.transaction() as tx:
            sql = PushSQL(tx.conn)
            superseded = await sql.supersede_pushes(now)
            orphans = await sql.unknown_app_pushes(now, self.batch)
            for turn, app in orphans:
                await sql.fail_push(turn, app, f"no worker app named {app}")
            claimed = await sql.claim_pushes(
                now, limit=min(self.batch, free), skip_apps=skip, lease_margin_s=LEASE_MARGIN_S
            )
        if superseded:
            await self.metrics.add("push.superseded", superseded)
            log.info("push.superseded", count=superseded)
        for turn, app in orphans:
            await self._dead_letter_row(turn, app, "permanent", f"no worker app named {app}")
        for push in claimed:
            self._start(push)
        return len(claimed)

    def _start(self, push: ClaimedPush) -> None:
        self._in_flight[push.app] = self._in_flight.get(push.app, 0) + 1
        task = asyncio.create_task(self._attempt_logged(push))
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._in_flight[push.app] -= 1
            self._woken.set()  # capacity freed: claim again without waiting for the poll

        task.add_done_callback(done)

    async def pause(self, seconds: float) -> None:
        """Until woken (a push recorded, an attempt done), stopped, or the poll interval."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({stopping, woken}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            stopping.cancel()
            woken.cancel()
        self._woken.clear()

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # Graceful stop: the attempts under way finish and write their outcome.
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> int:
        """Every push due now, attempts awaited (for tests)."""
        total = 0
        while True:
            started = await self.step()
            total += started
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            elif not started:
                return total

    async def _attempt_logged(self, push: ClaimedPush) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(turn=push.turn, app=push.app,
                                               attempt=push.attempt)  # fmt: skip
        try:
            await self.attempt(push)
        except Exception as exc:  # noqa: BLE001 - the lease brings the push back: log it
            log.warning("push.attempt_broken", error_class=type(exc).__name__,
                        error=str(exc)[:500])  # fmt: skip
            await self.metrics.add("push.attempt_broken")

    async def attempt(self, push: ClaimedPush) -> None:
        """One POST and its outcome (the push is leased to us)."""
        started = time.perf_counter()
        try:
            answer = await self.client.post(
                push.url, push.secret, msg_id=push.turn, timestamp=int(time.time()),
                body=push.body, timeout_s=push.timeout_s,
            )  # fmt: skip
        except AppError as exc:
            await self._refused(push, exc, _ms(started))
            return
        await self._answered(push, answer, _ms(started))

    async def _answered(self, push: ClaimedPush, answer: AppAnswer, ms: int) -> None:
        replies = inline.replies_of(
            answer.body, turn=push.turn, account=push.account_id, conversation=push.conversation_id
        )
        # Published before the push is marked answered: a crash in between pushes again, and
        # the same refs make the deliver group post each reply once.
        for reply in replies.good:
            await self.redis.xadd(self.outbound_key, events.encode(reply))  # type: ignore[arg-type]
        for bad in replies.bad:
            await self._dead_letter_reply(push, bad)
        await self.breakers.succeeded(push.app)
        async with self.store.transaction() as tx:
            sql = PushSQL(tx.conn)
            await sql.settle_push(push.turn, push.app, attempt=push.attempt,
                                  status=Push.ANSWERED, replies=len(replies.good))  # fmt: skip
            await sql.record_attempt(push.turn, push.app, attempt=push.attempt,
                                     outcome="answered", http_status=answer.status, ms=ms,
                                     error=None)  # fmt: skip
        await self.metrics.add("push.answered")
        log.info("push.answered", status=answer.status, replies=len(replies.good),
                 bad_replies=len(replies.bad), ms=ms)  # fmt: skip

    async def _refused(self, push: ClaimedPush, exc: AppError, ms: int) -> None:
        exhausted = push.attempt >= self.spec.max_attempts
        final = not exc.retryable or exhausted
        async with self.store.transaction() as tx:
            now = await self.now(tx)
            sql = PushSQL(tx.conn)
            wait = 0.0
            if final:
                await sql.settle_push(push.turn, push.app, attempt=push.attempt,
                                      status=Push.FAILED, error=str(exc))  # fmt: skip
            else:
                wait = backoff.backoff(
                    push.attempt, self.spec.retry_ms, jitter=self.spec.jitter, rand=self.rand(),
                    retry_after=exc.retry_after,
                )  # fmt: skip
                await sql.settle_push(push.turn, push.app, attempt=push.attempt,
                                      status=Push.QUEUED, error=str(exc),
                                      next_attempt_at=now + dt.timedelta(seconds=wait))  # fmt: skip
            outcome = "failed" if final else "retry"
            await sql.record_attempt(
                push.turn, push.app, attempt=push.attempt, outcome=outcome,
                http_status=exc.status, ms=ms, error=str(exc)[:2000],
            )  # fmt: skip
        if exc.retryable and exc.status != 429:
            breaker = self.spec.breaker
            await self.breakers.failed(push.app, now.timestamp(), threshold=breaker.failures,
                                       open_s=breaker.open_ms / 1000)  # fmt: skip
        if final:
            reason = "permanent" if not exc.retryable else "max_attempts"
            await self.metrics.add("push.failed")
            log.warning("push.failed", reason=reason, error=str(exc), status=exc.status)
            await self._dead_letter_row(push.turn, push.app, reason, str(exc), push=push)
            return
        await self.metrics.add("push.retried")
        log.info("push.retry_scheduled", wait_s=round(wait, 2), error=str(exc),
                 status=exc.status)  # fmt: skip

    async def _dead_letter_row(
        self, turn: str, app: str, reason: str, error: str, *, push: ClaimedPush | None = None
    ) -> None:
        """The turn's entry to the dead stream, with the app it was for: `dlq replay` queues
        the push again (the turn is not re-published where agents would read it twice)."""
        original: dict[str, bytes] = {"turn": turn.encode(), PUSH_APP_FIELD: app.encode()}
        stream = stream_id = ""
        if push is not None:
            stream, stream_id = push.stream, push.stream_id
            original["body"] = push.body
        dead = events.DeadEntry(stream=stream, group=GROUP, id=stream_id, reason=reason,
                                error=error, original=original)  # fmt: skip
        await self.redis.xadd(self.dead_key, events.wire(events.encode(dead)))  # type: ignore[arg-type]
        await self.metrics.add("push.dead_lettered")
        log.error("push.dead_lettered", turn=turn, app=app, reason=reason)

    async def _dead_letter_reply(self, push: ClaimedPush, bad: inline.Bad) -> None:
        """A reply that does not validate: a clear dead letter; the others still went out."""
        dead = events.DeadEntry(
            stream=self.outbound_key, group=GROUP, reason="bad_reply", error=bad.reason,
            original={"turn": push.turn.encode(), PUSH_APP_FIELD: push.app.encode(),
                      "reply": bad.raw},
        )  # fmt: skip
        await self.redis.xadd(self.dead_key, events.wire(events.encode(dead)))  # type: ignore[arg-type]
        await self.metrics.add("push.bad_reply")
        log.error("push.bad_reply", error=bad.reason)


# The dead letter of a push names its app in this field (beside the turn id).
PUSH_APP_FIELD = "push_app"


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


class Breakers:
    """One breaker per app, shared by every process through a Redis hash (advisory: two
    processes failing at once may each count; the breaker opens either way)."""

    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def _all(self) -> dict[str, Breaker]:
        raw: Any = await self.redis.hgetall(self.key)
        out: dict[str, Breaker] = {}
        for app, value in raw.items():
            try:
                out[_text(app)] = msgspec.json.decode(value, type=Breaker)
            except msgspec.DecodeError:
                continue  # unreadable: as if closed
        return out

    async def open_apps(self, now: float) -> list[str]:
        return [app for app, b in (await self._all()).items() if b.state(now) == "open"]

    async def failed(self, app: str, now: float, *, threshold: int, open_s: float) -> None:
        raw: Any = await self.redis.hget(self.key, app)
        current = msgspec.json.decode(raw, type=Breaker) if raw else Breaker()
        after = current.failed(now, threshold=threshold, open_s=open_s)
        await self.redis.hset(self.key, app, msgspec.json.encode(after))
        if after.open_until and after.open_until != current.open_until:
            log.warning("push.breaker_opened", app=app, until=after.open_until)

    async def succeeded(self, app: str) -> None:
        await self.redis.hdel(self.key, app)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def workers(
    settings: Settings,
    topology: Topology,
    redis: aioredis.Redis,
    store: Store,
    stack: contextlib.AsyncExitStack,
) -> list[Runner | PushWorker]:
    """The push group's workers: a runner per turn stream it reads, and the attempts' worker
    (its HTTP client open while `stack` is)."""
    policy = egress.Policy(
        allow_http=settings.allow_http_apps, allow_private=settings.allow_private_apps
    )
    client = await stack.enter_async_context(AppClient(policy=policy))
    worker = PushWorker(store, redis, topology, client)
    spec = topology.groups[GROUP]
    built: list[Runner | PushWorker] = [worker]
    for stream in topology.push_streams(spec.stream):
        key = topology.key(stream)
        built.append(
            Runner(
                redis,
                key=key,
                group=GROUP,
                spec=spec,
                dead_key=topology.key("dead"),
                metrics_key=topology.key("metrics"),
                handler=Pusher(store, topology, stream=key, wake=worker.wake),
            )  # fmt: skip
        )
    return built
