"""The one consumer-group loop every group runs: read, handle, ack after commit, reclaim,
dead-letter, drain, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from consumers import decisions, faults, supervise
from consumers.counters import DEAD_LETTERS, Counters
from consumers.errors import Outage
from consumers.faults import Fault
from ingress import events
from ingress.connect import UNAVAILABLE, UNREACHABLE
from ingress.topology import GroupSpec

log = structlog.get_logger("runner")


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    fields: dict[bytes, bytes]
    deliveries: int


Handler = Callable[[StreamEntry], Awaitable[None]]
# Handles a batch in one commit and says which entries it committed (in order); the others
# (a failure, and what it holds back to keep a partition's order) go through `Handler` one by
# one. Raises when nothing was committed.
BatchHandler = Callable[[list[StreamEntry]], Awaitable[list[bool]]]
# Called with an entry the runner is about to dead-letter (its handler's transaction rolled
# back), to leave a trace of it elsewhere; a failure here never stops the dead letter.
OnDead = Callable[[StreamEntry, "decisions.Dead"], Awaitable[None]]


def redis_fault(exc: Exception) -> Fault:
    """A Redis error (one of UNAVAILABLE) by what it is: a connection or timeout, a cluster
    no node of which answers, or an error reply about the server's state (OOM, READONLY,
    LOADING, ...), is an outage; any other reply is a bug."""
    if isinstance(exc, UNREACHABLE):
        return Fault.OUTAGE
    if isinstance(exc, ResponseError):
        return faults.of_redis_reply(exc.status_code, str(exc))
    return Fault.BUG


async def ensure_group(redis: aioredis.Redis, key: str, group: str) -> None:
    """Create the group (and the stream) if missing; an existing group is left as it is."""
    try:
        await redis.xgroup_create(key, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def group_missing(exc: Exception) -> bool:
    """A NOGROUP reply: the group (or its stream) no longer exists in Redis."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def by_conversation(entry: StreamEntry) -> bytes:
    """The partition of entries that carry `account` and `conversation` fields (events,
    outbound): one conversation's entries stay in order, different ones run side by side."""
    return entry.fields.get(b"account", b"") + b":" + entry.fields.get(b"conversation", b"")


def consumer_name(group: str) -> str:
    """Unique per process, so a restarted consumer never inherits a dead one's identity."""
    return f"{socket.gethostname()}-{os.getpid()}-{group}"


class Runner:
    """Runs `handler` over a stream for one consumer group.

    The handler commits its effects and returns; only then is the entry acknowledged, so a
    consumer that dies mid-batch loses nothing: its pending entries are reclaimed (XAUTOCLAIM)
    by any consumer of the group once idle for `claim_idle_ms`.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key: str,
        group: str,
        spec: GroupSpec,
        dead_key: str,
        handler: Handler,
        consumer: str | None = None,
        metrics_key: str | None = None,
        partition: Callable[[StreamEntry], bytes] | None = None,
        on_dead: OnDead | None = None,
        batch_handler: BatchHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        ack_every_s: float = 1.0,
    ) -> None:
        self.redis = redis
        self.key = key
        self.group = group
        self.spec = spec
        self.dead_key = dead_key
        self.handler = handler
        self.consumer = consumer or consumer_name(group)
        self.clock = clock
        self.ack_every_s = ack_every_s
        self.counters = Counters(redis, metrics_key=metrics_key)
        # Entries with the same partition key are handled in stream order, others concurrently.
        self.partition = partition
        self.on_dead = on_dead
        self.batch_handler = batch_handler
        self._stopping = asyncio.Event()
        self._next_claim = 0.0
        self._claim_cursor = "0-0"

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, self.key, self.group)

    def stop(self) -> None:
        """Stop reading; the batch in hand is finished and acknowledged first."""
        self._stopping.set()

    async def run(self) -> None:
        log.info("runner.started", group=self.group, stream=self.key, consumer=self.consumer)
        failures = 0
        ready = False
        while not self._stopping.is_set():
            try:
                if not ready:  # inside the loop: a Redis that comes up after us is waited for
                    await self.ensure_group()
                    ready = True
                await self.step(block_ms=self.spec.block_ms)
                failures = 0
            except UNAVAILABLE as exc:
                failures += 1
                if group_missing(exc):
                    # The stream was deleted or Redis came back without its data: the next
                    # XADD recreates the stream, never the group. Recreate it (from the start
                    # of what the stream holds now); what Redis lost is gone with it.
                    log.error(
                        "runner.group_lost",
                        group=self.group,
                        stream=self.key,
                        error=str(exc),
                        hint="entries may be lost with Redis' data: run switchboard backfill",
                    )
                    await self.counters.add(f"{self.group}.group_lost")
                    ready = False
                wait = supervise.wait_after(failures + 1)
                log.warning("runner.redis_unavailable", group=self.group, error=str(exc), wait=wait)
                await self._sleep(wait)
            except Exception as exc:  # noqa: BLE001 - one batch's failure must not end the group
                failures += 1
                await supervise.step_failed(self.group, exc, self.counters, failures=failures)
                await self._sleep(supervise.wait_after(failures))
        await self._forget_if_idle()
        structlog.contextvars.clear_contextvars()
        log.info("runner.stopped", group=self.group, consumer=self.consumer)

    async def drain(self) -> int:
        """Handle every entry available now, then return how many were handled (for tests)."""
        await self.ensure_group()
        total = 0
        while handled := await self.step(block_ms=None):
            total += handled
        return total

    async def step(self, *, block_ms: int | None) -> int:
        """One batch: reclaimed entries when any are due, else new ones."""
        entries = await self._claim()
        if not entries:
            entries = await self._read(block_ms)
        if entries:
            await self._process(entries)
        return len(entries)

    async def _read(self, block_ms: int | None) -> list[StreamEntry]:
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=self.spec.batch, block=block_ms
        )
        if not reply:
            return []
        _, messages = reply[0]
        return [
            StreamEntry(id=_text(entry_id), fields=fields or {}, deliveries=1)
            for entry_id, fields in messages
        ]

    async def _claim(self) -> list[StreamEntry]:
        now = self.clock()
        if now < self._next_claim:
            return []
        reply: Any = await self.redis.xautoclaim(
            self.key,
            self.group,
            self.consumer,
            min_idle_time=self.spec.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.spec.batch,
        )
        cursor, claimed = _text(reply[0]), reply[1]
        self._claim_cursor = cursor
        if cursor == "0-0":
            # A full pass over the pending list: look again when entries could be idle enough.
            self._next_claim = now + self.spec.claim_idle_ms / 2000
        if not claimed:
            return []
        counts = await self._delivery_counts([_text(i) for i, _ in claimed])
        return [
            StreamEntry(id=_text(i), fields=fields or {}, deliveries=counts.get(_text(i), 1))
            for i, fields in claimed
        ]

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        # Counts live in the group's pending list, so they survive consumer restarts.
        rows: Any = await self.redis.xpending_range(
            self.key,
            self.group,
            min=ids[0],
            max=ids[-1],
            count=len(ids) * 4,
            consumername=self.consumer,
        )
        return {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _process(self, entries: list[StreamEntry]) -> None:
        """Handle a batch: first in one commit by the batch handler, if any; what it left, the
        entries of one partition in stream order, partitions (different conversations)
        concurrently; then acknowledge what is done in one XACK (ack after commit)."""
        committed: list[str] = []
        if self.batch_handler is not None:
            committed, entries = await self._in_batch(entries)
        partitions: dict[bytes, list[StreamEntry]] = {}
        for entry in entries:
            key = self.partition(entry) if self.partition else b""
            partitions.setdefault(key, []).append(entry)
        await self._ack(committed)  # what the batch handler committed needs nothing more
        tasks = [asyncio.create_task(self._in_order(p)) for p in partitions.values()]
        pending: set[asyncio.Task[list[str]]] = set(tasks)
        try:
            while pending:
                # Usually one pass. A partition held in an outage wait (its entry is never
                # acked) must not hold back the acks of the partitions that finished: what
                # is done is acknowledged every `ack_every_s` while the others go on.
                # What the other partitions finished is acknowledged even when one failed.
                finished, pending = await asyncio.wait(pending, timeout=self.ack_every_s)
                await self._ack([i for t in finished if t.exception() is None for i in t.result()])
        finally:
            for task in pending:  # cancelled mid-batch: the held entries stay pending
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if (error := task.exception()) is not None:
                raise error

    async def _ack(self, done: list[str]) -> None:
        if done:
            await self.redis.xack(self.key, self.group, *done)
            await self.counters.add(f"{self.group}.handled", len(done))

    async def _in_batch(self, entries: list[StreamEntry]) -> tuple[list[str], list[StreamEntry]]:
        """The ids the batch handler committed, and the entries left to handle one by one:
        those it did not commit, and those it is not given (trimmed from the stream, or out
        of deliveries), decided by `_handle` as ever."""
        assert self.batch_handler is not None
        live = [
            e for e in entries
            if e.fields and decisions.exhausted(e.deliveries, self.spec.max_deliveries) is None
        ]  # fmt: skip
        if not live:
            return [], entries
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(group=self.group)
        started = time.perf_counter()
        try:
            done = await self.batch_handler(live)
        except Exception as exc:  # noqa: BLE001 - the entries are handled one by one instead
            structlog.contextvars.clear_contextvars()  # what the batch's entries bound
            structlog.contextvars.bind_contextvars(group=self.group)
            log.warning("batch.failed", entries=len(live), error=f"{type(exc).__name__}: {exc}")
            return [], entries
        finally:
            structlog.contextvars.clear_contextvars()
        committed = {e.id for e, ok in zip(live, done, strict=True) if ok}
        log.debug("batch.handled", group=self.group, entries=len(live),
                  committed=len(committed),
                  ms=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip
        return [e.id for e in live if e.id in committed], [
            e for e in entries if e.id not in committed
        ]

    async def _in_order(self, entries: list[StreamEntry]) -> list[str]:
        done: list[str] = []
        for entry in entries:
            try:
                decision = await self._decided(entry)
            finally:
                # The entry's context (its id, and what the handler bound: a delivery, a
                # ref) is for its own lines: never the next entry's or the loop's.
                structlog.contextvars.clear_contextvars()
            if decision is not None:
                done.append(entry.id)
        return done

    async def _decided(self, entry: StreamEntry) -> decisions.Decision | None:
        """Handle one entry to a decision (an outage is waited out, a dead entry
        dead-lettered); the decision when the entry is done, None when it stays pending."""
        decision = await self._handle(entry)
        wait = 0.1
        while isinstance(decision, decisions.Retry) and decision.outage:
            if self._stopping.is_set():
                break  # stays pending: reclaimed once things are back
            await self._sleep(wait)
            wait = min(wait * 2, 5.0)
            await self._hold(entry)
            decision = await self._handle(entry)
        if isinstance(decision, decisions.Dead) and not await self._dead_lettered(entry, decision):
            return None  # stays pending, and the entries behind it go on
        if isinstance(decision, decisions.Retry):
            return None
        return decision

    async def _dead_lettered(self, entry: StreamEntry, dead: decisions.Dead) -> bool:
        """Dead-letter an entry; False when that failed. Then the entry is not acknowledged
        (it would be lost: it is nowhere else), it stays pending and is tried again once
        reclaimed, and the entries behind it in its partition are handled meanwhile."""
        try:
            await self._dead_letter(entry, dead)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the entry stays pending
            log.error("entry.dead_letter_failed", error_class=type(exc).__name__,
                      error=str(exc)[:500])  # fmt: skip
            with contextlib.suppress(*UNAVAILABLE):
                await self.counters.add(f"{self.group}.dead_letter_failed")
            return False
        return True

    async def _handle(self, entry: StreamEntry) -> decisions.Decision:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(group=self.group, entry=entry.id)
        if not entry.fields:
            return decisions.Ack()  # trimmed from the stream while pending: nothing left to do
        exhausted = decisions.exhausted(entry.deliveries, self.spec.max_deliveries)
        if exhausted is not None:
            return exhausted
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self.handler(entry)
        except UNAVAILABLE as exc:
            fault = redis_fault(exc)
            error = Outage(f"Redis: {type(exc).__name__}: {exc}") if fault is Fault.OUTAGE else exc
        except Exception as exc:  # noqa: BLE001 - every failure is decided on just below
            error = exc
        decision = decisions.decide(
            error, deliveries=entry.deliveries, max_deliveries=self.spec.max_deliveries
        )
        ms = round((time.perf_counter() - started) * 1000, 2)
        if isinstance(decision, decisions.Ack):
            log.debug("entry.handled", ms=ms)
        else:
            log.warning(
                "entry.failed",
                decision=type(decision).__name__.lower(),
                deliveries=entry.deliveries,
                error=decision.error,
                ms=ms,
            )
        return decision

    async def _hold(self, entry: StreamEntry) -> None:
        """Keep an entry ours while an outage is waited out: XCLAIM with JUSTID resets its idle
        time without counting a delivery, so no other consumer reclaims it meanwhile."""
        try:
            await self.redis.xclaim(
                self.key, self.group, self.consumer, min_idle_time=0,
                message_ids=[entry.id], justid=True,
            )  # fmt: skip
        except UNAVAILABLE:
            pass  # Redis is the outage: nobody can reclaim it either

    async def _dead_letter(self, entry: StreamEntry, dead: decisions.Dead) -> None:
        fields = events.encode(
            events.DeadEntry(
                stream=self.key,
                group=self.group,
                id=entry.id,
                deliveries=entry.deliveries,
                reason=dead.reason,
                error=dead.error,
                original=events.plain(entry.fields),
            )
        )
        if self.on_dead is not None:
            await self._record_dead(entry, dead)
        # XADD before XACK: a crash between the two dead-letters twice, never loses the entry.
        await self.redis.xadd(self.dead_key, events.wire(fields))  # type: ignore[arg-type]
        await self.counters.add(f"{self.group}.dead_lettered")
        await self.counters.count(DEAD_LETTERS, group=self.group, reason=dead.reason)
        log.error("entry.dead_lettered", reason=dead.reason, error=dead.error)

    async def _record_dead(self, entry: StreamEntry, dead: decisions.Dead) -> None:
        assert self.on_dead is not None
        try:
            await self.on_dead(entry, dead)
        except Exception as exc:  # noqa: BLE001 - the dead letter itself must still be written
            log.error(
                "entry.dead_record_failed",
                error_class=type(exc).__name__,
                error=str(exc)[:500],
            )
            await self.counters.add(f"{self.group}.dead_record_failed")

    async def _forget_if_idle(self) -> None:
        """Remove this consumer from the group on a clean stop, unless it still owns entries."""
        try:
            pending = await self.redis.xpending_range(
                self.key, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                await self.redis.xgroup_delconsumer(self.key, self.group, self.consumer)
        except UNAVAILABLE:
            pass  # best effort: a leftover idle consumer name harms nothing

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
