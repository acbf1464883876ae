"""The deliver group: agent replies into Chatwoot, each posted once.

A reply is recorded in `outbound` by its `ref` before anything is sent; the stream entry is
acknowledged once its first attempt's outcome is committed. An attempt is marked `sending`
(committed) before its POST and the ref travels as `content_attributes.ext_ref`. A transient
failure schedules the next attempt in the row (backoff with jitter, Retry-After honoured), where
the retry worker picks it up, so one failing conversation never holds up another's replies.
When an attempt's outcome is unknown (timeout, reset, crash), the next one first looks for proof
that Chatwoot has the message — our echo webhook, or the conversation's message list when a
user token is configured — and only then sends again.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from consumers import backoff, faults, gates, statuses
from consumers import conversation as cv
from consumers.chatwoot import ChatwootClient
from consumers.clock import utcnow
from consumers.counters import Counters
from consumers.errors import ChatwootError, PermanentError, StoreError
from consumers.faults import Fault
from consumers.limits import Limits
from consumers.polling import PollingWorker
from consumers.runner import StreamEntry
from consumers.statuses import Outbound
from consumers.store import OutboundRow, Store, Tx
from ingress import events
from ingress.events import OutboundKind
from ingress.topology import Topology

log = structlog.get_logger("deliver")


class Deliverer:
    def __init__(
        self,
        store: Store,
        client: ChatwootClient,
        topology: Topology,
        *,
        redis: aioredis.Redis,
        base_url: str,
        clock: Callable[[], dt.datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.client = client
        self.topology = topology
        self.spec = topology.delivery
        self.redis = redis
        self.stream_key = topology.key("outbound")
        self.counters = Counters(redis, metrics_key=topology.key("metrics"))
        self.limits = Limits(redis, tag=f"{{{self.stream_key}}}", spec=self.spec,
                             counters=self.counters)  # fmt: skip
        self.host = urlsplit(base_url).netloc
        self.clock = clock
        self.rand = rand

    async def __call__(self, entry: StreamEntry) -> None:
        """The stream handler: record the reply, make its first attempt."""
        reply = events.decode(events.OutboundEntry, entry.fields)
        # Without a ref, the entry id is one: a re-published entry stays one reply.
        ref = reply.ref or f"{self.stream_key}:{entry.id}"
        async with self.store.transaction() as tx:
            await tx.open_outbound(reply, ref=ref, stream_id=entry.id)
        failure = await self.attempt(ref, reply)
        if failure is not None:
            raise PermanentError(failure)  # the runner dead-letters the entry with the reason

    async def attempt(self, ref: str, reply: events.OutboundEntry) -> str | None:
        """One attempt if one is due; the reason when the reply failed for good."""
        structlog.contextvars.bind_contextvars(ref=ref, account=reply.account,
                                               conversation=reply.conversation)  # fmt: skip
        row = await self._begin(ref, reply)
        if row is None:
            return None
        try:
            message_id = await self._send(ref, reply, row)
        except ChatwootError as exc:
            return await self._failed(ref, reply, row.attempts + 1, exc)
        await self.limits.succeeded(reply.account)
        async with self.store.transaction() as tx:
            await tx.mark_posted(ref, chatwoot_message_id=message_id)
            await self._after_sent(tx, reply)
        await self.counters.add("deliver.sent")
        log.info("reply.sent", kind=str(reply.kind), chatwoot_message=message_id,
                 attempt=row.attempts + 1)  # fmt: skip
        return None

    async def _begin(self, ref: str, reply: events.OutboundEntry) -> OutboundRow | None:
        """Claim an attempt (committed `sending` with a lease), or None when none is due."""
        now = self.clock()
        async with self.store.transaction() as tx:
            row = await tx.lock_outbound(ref)
            if row is None or Outbound(row.status) in statuses.OUTBOUND_DONE:
                return None
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                return None  # a retry not due yet, or an attempt under way elsewhere
            if row.status == Outbound.QUEUED and (reason := await self._closed(tx, reply)):
                await tx.set_outbound(ref, status=Outbound.SUPPRESSED, error=reason)
                await self.counters.add("deliver.suppressed")
                log.info("reply.suppressed", reason=reason)
                return None
            if row.status == Outbound.SENDING:
                posted = await self._already_posted(tx, reply, row)
                if posted is not None:
                    await tx.mark_posted(ref, chatwoot_message_id=posted)
                    await self.counters.add("deliver.recovered")
                    log.info("reply.recovered", chatwoot_message=posted)
                    return None
            wait = await self._wait(reply.account, now.timestamp())
            if wait > 0:
                await tx.hold_until(ref, now + dt.timedelta(seconds=wait))
                return None
            conversation = reply.conversation or row.chatwoot_conversation_id
            known = await tx.last_message_id(reply.account, conversation) if conversation else 0
            await tx.begin_attempt(
                ref,
                attempts=row.attempts + 1,
                lease_until=now + dt.timedelta(milliseconds=self.spec.lease_ms),
                known_through=known,
            )
        return row

    async def _wait(self, account: int, now: float) -> float:
        """Seconds before this account may be called: an open breaker, then the rate limits."""
        breaker = await self.limits.breaker(account)
        state = breaker.state(now)
        if state == "open":
            return breaker.open_until - now
        if state == "half-open" and not await self.limits.probe(account, now):
            return 1.0  # another deliverer is probing the account
        return await self.limits.wait_for_token(self.host, account)

    async def _closed(self, tx: Tx, reply: events.OutboundEntry) -> str | None:
        if reply.conversation is None:
            return None
        context = await tx.reply_context(reply.account, reply.conversation)
        if context is None:
            return None
        policy = self.topology.policy_for(
            account=reply.account, inbox=context.inbox_id, channel=context.channel
        )
        return gates.closed_because(
            reply,
            handler=context.handler,
            status=context.status,
            last_inbound=context.last_inbound_message_id,
            route=policy,
        )

    async def _already_posted(
        self, tx: Tx, reply: events.OutboundEntry, row: OutboundRow
    ) -> int | None:
        echo = await tx.echo_of(row.ref)
        conversation = reply.conversation or row.chatwoot_conversation_id
        if echo is not None or reply.kind is not OutboundKind.MESSAGE or conversation is None:
            return echo
        if self.client.user_token is None:
            return None
        listed = await self.client.list_messages(
            reply.account, conversation, after=row.known_through
        )
        return next((m.id for m in listed if m.ext_ref == row.ref), None)

    async def _send(self, ref: str, reply: events.OutboundEntry, row: OutboundRow) -> int | None:
        kind = reply.kind
        conversation = reply.conversation or row.chatwoot_conversation_id
        if conversation is None:
            conversation = await self._start_conversation(ref, reply)
        if kind is OutboundKind.MESSAGE:
            created = await self.client.create_message(
                reply.account,
                conversation,
                content=reply.content,
                private=reply.private,
                content_attributes={**reply.content_attributes, "ext_ref": ref},
            )
            return created.id
        if kind is OutboundKind.HANDOFF:
            await self.client.toggle_status(reply.account, conversation, "open")
        elif kind is OutboundKind.RESOLVE:
            await self.client.toggle_status(reply.account, conversation, "resolved")
        else:
            on = kind is OutboundKind.TYPING_ON
            await self.client.toggle_typing(reply.account, conversation, on=on)
        return None

    async def _start_conversation(self, ref: str, reply: events.OutboundEntry) -> int:
        """An agent starting a conversation: Chatwoot creates it, we keep its id for retries."""
        assert reply.inbox is not None and reply.source_id is not None
        conversation = await self.client.create_conversation(
            reply.account, inbox=reply.inbox, source_id=reply.source_id, contact=reply.contact
        )
        async with self.store.transaction() as tx:
            await tx.set_conversation(ref, conversation)
        log.info("conversation.started", chatwoot_conversation=conversation)
        return conversation

    async def _after_sent(self, tx: Tx, reply: events.OutboundEntry) -> None:
        if reply.kind is OutboundKind.HANDOFF and reply.conversation is not None:
            # The agent handed the conversation to humans: turns stop from now on.
            conv = await tx.lock_conversation(reply.account, reply.conversation)
            if conv is not None:
                now = self.clock().timestamp()
                await tx.merge_signals(
                    conv, [cv.Signal(handler=cv.Handler.HUMAN, at=now, why="handoff")]
                )

    async def _failed(
        self, ref: str, reply: events.OutboundEntry, attempt: int, exc: ChatwootError
    ) -> str | None:
        """Fail for good, or schedule the next attempt; the reason when failed for good."""
        now = self.clock()
        if exc.retryable and exc.status != 429:
            await self.limits.failed(reply.account, now.timestamp())
        exhausted = attempt >= self.spec.max_attempts
        async with self.store.transaction() as tx:
            if not exc.retryable or exhausted:
                reason = "permanent" if not exc.retryable else "max_attempts"
                await tx.set_outbound(ref, status=Outbound.FAILED, error=str(exc))
                await self.counters.add("deliver.failed")
                log.warning("reply.failed", reason=reason, error=str(exc), status=exc.status)
                return f"{reason}: {exc}"
            wait = backoff.backoff(
                attempt, self.spec.retry_ms, jitter=self.spec.jitter, rand=self.rand(),
                retry_after=exc.retry_after,
            )  # fmt: skip
            if exc.ambiguous and self.client.user_token is None:
                # Only the echo webhook can tell whether it landed: give it time to arrive.
                wait = max(wait, self.spec.echo_wait_ms / 1000)
            # The reply stays `sending`: the next attempt looks for proof it was posted first.
            await tx.set_outbound(ref, status=Outbound.SENDING, error=str(exc))
            await tx.hold_until(ref, now + dt.timedelta(seconds=wait))
        await self.counters.add("deliver.retried")
        log.info("reply.retry_scheduled", attempt=attempt, wait_s=round(wait, 2),
                 error=str(exc))  # fmt: skip
        return None


class Retrier(PollingWorker):
    """Runs the attempts the outbox says are due: retries, and attempts whose deliverer died."""

    name = "deliver-retries"

    def __init__(self, deliverer: Deliverer, *, batch: int = 20) -> None:
        super().__init__()
        self.deliverer = deliverer
        self.batch = batch
        self.poll_s = deliverer.spec.poll_ms / 1000
        # Consecutive failed attempts per reply, for the backoff of `_held` (this process).
        self._failures: dict[str, int] = {}

    async def step(self) -> int:
        return await self.run_due()

    async def run_due(self) -> int:
        deliverer = self.deliverer
        async with deliverer.store.transaction() as tx:
            refs = await tx.due_outbound(deliverer.clock(), self.batch)
        for ref in refs:
            structlog.contextvars.clear_contextvars()
            try:
                async with deliverer.store.transaction() as tx:
                    reply = await tx.outbound_entry(ref)
                failure = await deliverer.attempt(ref, reply)
            except Exception as exc:  # noqa: BLE001 - one reply's failure must not stop the rest
                if isinstance(exc, RedisError) or faults.of_error(exc) is Fault.OUTAGE:
                    raise  # PostgreSQL or Redis down: the worker loop waits it out
                await self._held(ref, exc)
                continue
            self._failures.pop(ref, None)
            if failure is not None:
                await self._dead_letter(ref, reply, failure)
        return len(refs)

    async def _held(self, ref: str, exc: Exception) -> None:
        """An attempt that raised (say the check after an ambiguous POST failed: whether the
        reply landed is unknown) is held with backoff, so it neither blocks the other due
        replies nor comes back at once."""
        failures = self._failures[ref] = self._failures.get(ref, 0) + 1
        spec = self.deliverer.spec
        after = exc.retry_after if isinstance(exc, ChatwootError) else None
        wait = backoff.backoff(failures, spec.retry_ms, jitter=spec.jitter,
                               rand=self.deliverer.rand(), retry_after=after)  # fmt: skip
        log.warning("reply.attempt_failed", ref=ref, error_class=type(exc).__name__,
                    error=str(exc)[:500], wait_s=round(wait, 2))  # fmt: skip
        await self.deliverer.counters.add("deliver.attempt_failed")
        until = self.deliverer.clock() + dt.timedelta(seconds=wait)
        try:
            async with self.deliverer.store.transaction() as tx:
                await tx.hold_until(ref, until, error=f"{type(exc).__name__}: {exc}"[:2000])
        except StoreError as store_exc:
            log.warning("reply.hold_failed", ref=ref, error=str(store_exc))

    async def _dead_letter(self, ref: str, reply: events.OutboundEntry, failure: str) -> None:
        """A retried reply that failed for good: its fields to the dead stream, as an entry's."""
        reason, _, error = failure.partition(": ")
        dead = events.DeadEntry(
            stream=self.deliverer.stream_key,
            group="deliver",
            reason=reason,
            error=error,
            original=events.encode(reply),  # holds the ref: replay finds the outbound row by it
        )
        fields = events.encode(dead)
        await self.deliverer.redis.xadd(self.deliverer.topology.key("dead"), fields)  # type: ignore[arg-type]
        log.error("reply.dead_lettered", ref=ref, reason=reason)
