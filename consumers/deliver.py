"""The deliver group: agent replies into Chatwoot, each posted once.

A reply is recorded in `outbound` by its `ref` before anything is sent; the stream entry is
acknowledged once its first attempt's outcome is committed. An attempt is marked `sending`
(committed) before its POST and the ref travels as `content_attributes.ext_ref`. A transient
failure schedules the next attempt in the row (backoff with jitter, Retry-After honoured), where
the retry worker picks it up, so one failing conversation never holds up another's replies.
When an attempt's outcome is unknown (timeout, reset, crash), the next one first looks for proof
that Chatwoot has the message — our echo webhook, or the conversation's message list when a
user token is configured — and only then sends again.

No network call is made inside a transaction: the row is read (short transaction), what needs
Redis or Chatwoot is gathered, `steps.next_step` decides, and the decision is written in a
second short transaction that applies only if the row is unchanged. Every time is the
database's clock (or the injected one, in tests), never the process clock mixed with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers import backoff, faults, gates, steps, unanswered
from consumers import conversation as cv
from consumers.backoff import Breaker
from consumers.chatwoot import ChatwootClient
from consumers.coalesce import Coalesced
from consumers.counters import DEAD_LETTERS, REPLY_POSTED, Counters
from consumers.errors import ChatwootError, PermanentError, StoreError
from consumers.faults import Fault
from consumers.limits import Limits
from consumers.outreach import Outreach
from consumers.polling import PollingWorker
from consumers.runner import StreamEntry
from consumers.statuses import Outbound
from consumers.store import OutboundRow, Store, Tx
from ingress import events
from ingress.connect import UNAVAILABLE
from ingress.events import OutboundKind
from ingress.topology import Topology

log = structlog.get_logger("deliver")

# One attempt (create conversation, check, POST) must end well inside its lease, or a second
# deliverer could take the reply over while the first is still talking to Chatwoot.
LEASE_SHARE = 0.75
# What an agent sends to say it is still working on a turn: each pushes its answer deadline.
EXTENDS = frozenset({OutboundKind.HOLD, OutboundKind.TYPING_ON})


class Read(msgspec.Struct, frozen=True, kw_only=True):
    """What one short read transaction learnt about a reply."""

    row: OutboundRow
    now: dt.datetime
    gate: str | None
    echo: int | None
    known: int


class Unread(msgspec.Struct, frozen=True):
    """`attempt` is to read the row itself."""


UNREAD = Unread()


class Arrived(msgspec.Struct, frozen=True):
    """A reply as its stream entry brought it, to record."""

    reply: events.OutboundEntry
    ref: str
    stream_id: str


class Claim(msgspec.Struct, frozen=True):
    row: OutboundRow
    lease_until: dt.datetime
    known_through: int


class Deliverer:
    def __init__(
        self,
        store: Store,
        client: ChatwootClient,
        topology: Topology,
        *,
        redis: aioredis.Redis,
        base_url: str,
        clock: Callable[[], dt.datetime] | None = None,
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
        self.clock = clock  # None: the database's clock
        self.rand = rand
        self.lease = dt.timedelta(milliseconds=self.spec.lease_ms)
        self.budget_s = self.spec.lease_ms / 1000 * LEASE_SHARE
        self.outreach = Outreach(store, client, now=self.now)
        # The replies of a read batch are handled concurrently: their recording and claims
        # share transactions (each reply's own work still all-or-nothing).
        self._record = Coalesced(store, self._record_in)
        self._claim = Coalesced(store, self._claim_in)

    async def now(self, tx: Tx) -> dt.datetime:
        """The time every lease and retry is set and compared by (one clock for all)."""
        return self.clock() if self.clock is not None else await tx.now()

    async def __call__(self, entry: StreamEntry) -> None:
        """The stream handler: record the reply, make its first attempt."""
        reply = events.decode(events.OutboundEntry, entry.fields)
        # Without a ref, the entry id is one: a re-published entry stays one reply.
        ref = reply.ref or f"{self.stream_key}:{entry.id}"
        read = await self._record(Arrived(reply, ref, entry.id))
        failure = await self.attempt(ref, reply, read=read)
        if failure is not None:
            raise PermanentError(failure)  # the runner dead-letters the entry with the reason

    async def _record_in(self, tx: Tx, arrived: Arrived) -> Read | None:
        """Record a reply and read it for its first attempt, in one transaction (shared with
        the other replies being recorded meanwhile)."""
        now = await self.now(tx)
        await tx.open_outbound(arrived.reply, ref=arrived.ref, stream_id=arrived.stream_id,
                               now=now)  # fmt: skip
        return await self._read_in(tx, arrived.ref, arrived.reply, now)

    async def _claim_in(self, tx: Tx, claim: Claim) -> bool:
        return await tx.claim_attempt(
            claim.row, lease_until=claim.lease_until, known_through=claim.known_through
        )

    async def attempt(
        self, ref: str, reply: events.OutboundEntry, *, read: Read | None | Unread = UNREAD
    ) -> str | None:
        """One attempt if one is due; the reason when the reply failed for good. `read`: the
        row as a transaction that just committed read it (None: there is none), or `UNREAD`."""
        structlog.contextvars.bind_contextvars(ref=ref, account=reply.account,
                                               conversation=reply.conversation,
                                               turn=reply.turn)  # fmt: skip
        if isinstance(read, Unread):
            read = await self._read(ref, reply)
        if read is None:
            return None
        step = await self._next_step(read)
        if not isinstance(step, steps.Attempt):
            await self._settle(read, step)
            return None
        # Committed before the POST, in a transaction of its own (shared with other claims).
        claimed = await self._claim(Claim(read.row, read.now + self.lease, read.known))
        if not claimed:
            log.info("reply.taken_elsewhere")  # another deliverer claimed it first
            return None
        return await self._make_attempt(ref, reply, read.row)

    async def _read(self, ref: str, reply: events.OutboundEntry) -> Read | None:
        """The row and its context, in one short transaction that locks nothing."""
        async with self.store.transaction() as tx:
            return await self._read_in(tx, ref, reply, await self.now(tx))

    async def _read_in(
        self, tx: Tx, ref: str, reply: events.OutboundEntry, now: dt.datetime
    ) -> Read | None:
        row = await tx.outbound_row(ref)
        if row is None:
            return None
        conversation = row.chatwoot_conversation_id
        gate = await self._gate(tx, reply) if row.status is Outbound.QUEUED else None
        echo = None
        # A reply whose earlier attempt may have landed (`sending`, or queued again
        # after one) is looked for among the echoes before anything is posted.
        if steps.attempted_before(row) and conversation is not None:
            echo = await tx.echo_of(ref, row.account_id, conversation)
        known = await tx.last_message_id(row.account_id, conversation) if conversation else 0
        return Read(row=row, now=now, gate=gate, echo=echo, known=known)

    async def _next_step(self, read: Read) -> steps.Step:
        """Decide, gathering what the decision asks for (outside any transaction)."""
        proof: steps.Proof | None = steps.Landed(read.echo) if read.echo is not None else None
        limit: steps.Limit | None = None
        while True:
            step = steps.next_step(
                read.row, now=read.now, gate=read.gate, proof=proof, limit=limit,
                can_list=self.client.user_token is not None, spec=self.spec, rand=self.rand(),
            )  # fmt: skip
            if isinstance(step, steps.CheckProof):
                proof = await self._check(read.row)
            elif isinstance(step, steps.AskLimits):
                limit = await self._limit(
                    read.row.account_id, read.now.timestamp(), read.row.chatwoot_conversation_id
                )
            else:
                return step

    async def _settle(self, read: Read, step: steps.Step) -> None:
        """Write a decision other than an attempt; each applies only to an unchanged row."""
        ref = read.row.ref
        async with self.store.transaction() as tx:
            if isinstance(step, steps.Suppress):
                if await tx.suppress_unchanged(read.row, step.reason):
                    await self.counters.add("deliver.suppressed")
                    log.info("reply.suppressed", reason=step.reason)
            elif isinstance(step, steps.Recovered):
                await tx.mark_posted(ref, chatwoot_message_id=step.message_id)
                await self.counters.add("deliver.recovered")
                log.info("reply.recovered", chatwoot_message=step.message_id)
            elif isinstance(step, steps.AwaitEcho):
                if await tx.await_echo_unchanged(read.row, step.until):
                    log.info("reply.awaiting_echo", until=step.until.isoformat())
            elif isinstance(step, steps.Hold):
                if await tx.hold_unchanged(read.row, step.until, step.why):
                    log.info("reply.held", why=step.why, until=step.until.isoformat())

    async def _check(self, row: OutboundRow) -> steps.Proof:
        """Does Chatwoot's message list hold our reply? A failed check proves nothing."""
        assert row.chatwoot_conversation_id is not None
        after = row.known_through
        try:
            async with asyncio.timeout(self.budget_s):
                for _ in range(20):  # 100 a page: far more than a conversation gets meanwhile
                    listed = await self.client.list_messages(
                        row.account_id, row.chatwoot_conversation_id, after=after
                    )
                    for message in listed:
                        if message.ext_ref == row.ref and message.message_type == 1:
                            return steps.Landed(message.id)
                    if len(listed) < 100:
                        return steps.Absent()
                    after = listed[-1].id
        except ChatwootError as exc:
            await self.counters.add("deliver.check_failed")
            return steps.Unknown(why=str(exc))
        except TimeoutError:
            await self.counters.add("deliver.check_failed")
            return steps.Unknown(why="listing the messages took too long")
        return steps.Unknown(why="the message list did not end")

    async def _limit(self, account: int, now: float, conversation: int | None) -> steps.Limit:
        """An open breaker, then the rate limits (the token is taken when there is one)."""
        admitted = await self.limits.admit(self.host, account, conversation)
        if not isinstance(admitted, Breaker):  # no breaker state: tokens asked already
            return steps.Wait(admitted, "rate limited") if admitted > 0 else steps.Go()
        state = admitted.state(now)
        if state == "open":
            return steps.Wait(admitted.open_until - now, "circuit breaker open")
        if state == "half-open" and not await self.limits.probe(account, now):
            return steps.Wait(1.0, "another deliverer is probing the account")
        wait = await self.limits.wait_for_token(self.host, account, conversation)
        return steps.Wait(wait, "rate limited") if wait > 0 else steps.Go()

    async def _gate(self, tx: Tx, reply: events.OutboundEntry) -> str | None:
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

    async def _make_attempt(
        self, ref: str, reply: events.OutboundEntry, row: OutboundRow
    ) -> str | None:
        """The claimed attempt's calls, all inside a budget well short of the lease."""
        attempt = row.attempts + 1
        try:
            async with asyncio.timeout(self.budget_s):
                message_id = await self._send(ref, reply, row)
        except TimeoutError:
            exc = ChatwootError(
                f"attempt {attempt} took over {self.budget_s:g} s", retryable=True, ambiguous=True
            )
            return await self._failed(ref, reply, attempt, exc)
        except ChatwootError as exc:
            return await self._failed(ref, reply, attempt, exc)
        await self._posted(ref, reply, message_id, attempt)
        return None

    async def _posted(
        self, ref: str, reply: events.OutboundEntry, message_id: int | None, attempt: int
    ) -> None:
        # Chatwoot has it: record that first, so nothing after it (Redis, a crash) can make
        # the reply look unsent. What a sent message or resolve settles shares the
        # transaction, each in a savepoint: its failure never undoes the record.
        async with self.store.transaction() as tx:
            await tx.mark_posted(ref, chatwoot_message_id=message_id)
            if reply.kind is OutboundKind.MESSAGE and not reply.private and reply.conversation:
                account, conversation = reply.account, reply.conversation
                await self._settled(tx, lambda: self._restart_in(tx, ref, account, conversation))
            if reply.kind is OutboundKind.RESOLVE and reply.conversation is not None:
                # The agent closed the conversation: that settles the turn it was given.
                account, conversation = reply.account, reply.conversation
                await self._settled(tx, lambda: tx.clear_answer(account, conversation))
            took = await tx.queued_to_sent(ref)
        await self.counters.observe(REPLY_POSTED, [took] if took is not None else [])
        await self.limits.succeeded(reply.account, count="deliver.sent")
        if reply.kind is OutboundKind.HANDOFF and reply.conversation is not None:
            await self._handed_off(reply.account, reply.conversation)
        if reply.kind in EXTENDS and reply.conversation is not None:
            await self._extend(reply.account, reply.conversation)
        log.info("reply.sent", kind=str(reply.kind), chatwoot_message=message_id,
                 attempt=attempt)  # fmt: skip

    async def _handed_off(self, account: int, conversation: int) -> None:
        """The agent handed the conversation to humans: turns stop from now on."""
        async with self.store.transaction() as tx:
            conv = await tx.lock_conversation(account, conversation)
            if conv is not None:
                at = (await self.now(tx)).timestamp()
                await tx.merge_signals(
                    conv, [cv.Signal(handler=cv.Handler.HUMAN, at=at, why="handoff")]
                )

    @staticmethod
    async def _settled(tx: Tx, work: Callable[[], Awaitable[object]]) -> None:
        """Work after a reply is recorded posted, in a savepoint: when it fails, it is logged
        and undone alone (as when it ran after the record's commit, it is not retried)."""
        try:
            async with tx.conn.transaction():
                await work()
        except Exception as exc:  # noqa: BLE001 - the record of the reply must stand
            if isinstance(exc, UNAVAILABLE) or faults.of_error(exc) is Fault.OUTAGE:
                raise  # the connection is gone: the record's commit fails too, as it must
            log.warning("reply.settle_failed", error_class=type(exc).__name__,
                        error=str(exc)[:500])  # fmt: skip

    async def _restart_in(self, tx: Tx, ref: str, account: int, conversation: int) -> None:
        """A reply that answers only part of what is awaited restarts the deadline of the
        rest: `answer_within_s` from now (a reply to turn 1 while turn 2 waits)."""
        context = await tx.reply_context(account, conversation)
        if context is None:
            return
        window = unanswered.answer_window(
            self.topology, account=account, inbox=context.inbox_id, channel=context.channel
        )
        if window is None:
            return
        due = await self.now(tx) + window[0]
        if await tx.restart_answer(account, conversation, ref=ref, due=due):
            log.info("turn.answer_restarted", due=due.isoformat())

    async def _extend(self, account: int, conversation: int) -> None:
        """The agent is still working on the turn: its answer deadline moves to
        `answer_within_s` from now, within the route's `max_holds`."""
        async with self.store.transaction() as tx:
            context = await tx.reply_context(account, conversation)
            if context is None:
                return
            window = unanswered.answer_window(
                self.topology, account=account, inbox=context.inbox_id, channel=context.channel
            )
            if window is None:
                return
            within, max_holds = window
            due = await self.now(tx) + within
            extended = await tx.extend_answer(account, conversation, due=due, max_holds=max_holds)
        log.info("turn.answer_extended" if extended else "turn.answer_not_extended",
                 due=due.isoformat())  # fmt: skip

    async def _send(self, ref: str, reply: events.OutboundEntry, row: OutboundRow) -> int | None:
        kind = reply.kind
        if kind is OutboundKind.HOLD:
            return None  # for us alone: nothing to tell Chatwoot
        conversation = row.chatwoot_conversation_id
        if conversation is None:
            conversation = await self.outreach.start(ref, reply, row)
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

    async def _failed(
        self, ref: str, reply: events.OutboundEntry, attempt: int, exc: ChatwootError
    ) -> str | None:
        """Fail for good, or schedule the next attempt; the reason when failed for good."""
        exhausted = attempt >= self.spec.max_attempts
        async with self.store.transaction() as tx:
            now = await self.now(tx)
            if not exc.retryable or exhausted:
                reason = "permanent" if not exc.retryable else "max_attempts"
                await tx.set_outbound(ref, status=Outbound.FAILED, error=str(exc))
            else:
                reason = ""
                wait = backoff.backoff(
                    attempt, self.spec.retry_ms, jitter=self.spec.jitter, rand=self.rand(),
                    retry_after=exc.retry_after,
                )  # fmt: skip
                if exc.ambiguous and self.client.user_token is None:
                    # Only the echo webhook can tell whether it landed: give it time to arrive.
                    wait = max(wait, self.spec.echo_wait_ms / 1000)
                # The reply stays `sending`: the next attempt looks for proof it was posted.
                await tx.set_outbound(ref, status=Outbound.SENDING, error=str(exc))
                await tx.hold_until(ref, now + dt.timedelta(seconds=wait))
        if exc.retryable and exc.status != 429:
            await self.limits.failed(reply.account, now.timestamp())
        if reason:
            await self.counters.add("deliver.failed")
            log.warning("reply.failed", reason=reason, error=str(exc), status=exc.status)
            return f"{reason}: {exc}"
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
            refs = await tx.due_outbound(await deliverer.now(tx), self.batch)
        for ref in refs:
            structlog.contextvars.clear_contextvars()
            try:
                async with deliverer.store.transaction() as tx:
                    reply = await tx.outbound_entry(ref)
                failure = await deliverer.attempt(ref, reply)
            except Exception as exc:  # noqa: BLE001 - one reply's failure must not stop the rest
                if isinstance(exc, UNAVAILABLE) or faults.of_error(exc) is Fault.OUTAGE:
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
        try:
            async with self.deliverer.store.transaction() as tx:
                until = await self.deliverer.now(tx) + dt.timedelta(seconds=wait)
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
        await self.deliverer.counters.count(DEAD_LETTERS, group="deliver", reason=reason)
        log.error("reply.dead_lettered", ref=ref, reason=reason)
