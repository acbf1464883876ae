"""Writes entries to Redis streams: at most once per Chatwoot delivery id, and to the local
spool while Redis is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
import structlog

from ingress import events
from ingress.connect import UNAVAILABLE, UNREACHABLE
from ingress.errors import PublishError
from ingress.spool import Record, Spool, SpoolFull

log = structlog.get_logger("publish")

# XADD unless this delivery id was stored within the window; both keys share the stream's
# Cluster slot (the seen-key carries the stream key as its hash tag).
XADD_ONCE = """
if KEYS[2] ~= nil and redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
if KEYS[2] ~= nil then redis.call('SET', KEYS[2], id, 'EX', ARGV[1]) end
return id
"""


class _Pending(NamedTuple):
    keys: list[str]
    args: list[Any]
    done: asyncio.Future[Any]  # the script's reply: the entry id, or None for a duplicate


def _settle(
    done: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None
) -> None:
    if done.done():  # its request went away (client gone, server stopping)
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)


def _fresh(exc: Exception) -> Exception:
    """One instance per waiting request: a shared one would collect every raiser's frames."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # noqa: BLE001 - an exception type with an unusual constructor
        return exc
    return copy if isinstance(copy, Exception) else exc


class Published(msgspec.Struct, frozen=True):
    entry: str | None = None  # the stream entry id; None when spooled or a duplicate
    spooled: bool = False
    duplicate: bool = False


# Chatwoot gives a webhook 5 s and never retries: Redis gets about one of them, then the
# webhook goes to the spool. The client's own timeouts bound each socket step; this bounds the
# whole call, whatever client the app was given.
REDIS_BUDGET_S = 1.0
# The drainer's pause after a failure it did not expect, doubling up to the cap.
BACKOFF_S, BACKOFF_CAP_S = 0.5, 30.0


class Publisher:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        spool: Spool | None = None,
        dedup_window_s: int = 600,
        budget_s: float = REDIS_BUDGET_S,
    ) -> None:
        self.redis = redis
        self.spool = spool
        self.dedup_window_s = dedup_window_s
        self.budget_s = budget_s
        # The XADDs asked for during the current event-loop tick, sent as one pipeline.
        self._batch: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._next: asyncio.Task[None] | None = None  # the task that will send `_batch`
        self._maybe_spooled = True  # until a look at the spool says it is empty

    async def publish(self, key: str, entry: events.Entry, *, delivery: str = "") -> Published:
        fields = events.encode(entry)
        record = Record(key, fields, delivery)
        refused: Exception | None = None
        if self.spool is not None and self._spooled() and self.spool.cutting():
            # The drainer is cutting (rewriting the rest of the file under the lock: a second
            # or more on a large spool), so Redis answers: go ahead of the spooled webhooks
            # rather than wait. Persist does not rely on order; a failed XADD spools as ever.
            with contextlib.suppress(PublishError, *UNAVAILABLE):
                entry_id = await self._xadd(key, fields, delivery)
                log.info("spool.bypassed", reason="cut under way")
                return Published(entry=entry_id, duplicate=entry_id is None)
        if self.spool is not None and self._spooled():
            # Older webhooks wait in the spool: queue behind them, keeping Chatwoot's order.
            try:
                await self.spool.append(record)
                return Published(spooled=True)
            except (SpoolFull, OSError) as exc:
                # Full (a long outage, a drain under way) or unwritable: Redis may well
                # answer. A stored webhook beats a refused one, and persist does not rely
                # on order: this one goes ahead of the spooled ones.
                refused = exc
        try:
            entry_id = await self._xadd(key, fields, delivery)
        except UNAVAILABLE as exc:
            cause = str(exc) or f"no answer within {self.budget_s} s"
            if self.spool is None:
                raise PublishError(f"XADD {key} failed: {cause}") from exc
            if refused is not None:
                raise PublishError(
                    f"Redis unavailable ({cause}) and spool refused: {refused}"
                ) from exc
            return await self._to_spool(record, cause=cause)
        if refused is not None:
            log.warning("spool.bypassed", error=str(refused)[:300])
        return Published(entry=entry_id, duplicate=entry_id is None)

    async def _xadd(self, key: str, fields: dict[str, bytes], delivery: str) -> str | None:
        """XADD_ONCE, sent with every other one asked for in this tick; answered (or raised)
        once the pipeline that carries it has its reply."""
        keys = [key, f"{{{key}}}:delivery:{delivery}"] if delivery else [key]
        args: list[Any] = [self.dedup_window_s]
        for name, value in fields.items():
            args += [name, value]
        loop = asyncio.get_running_loop()
        if self._next is None:
            # The first of this tick: the sending task's first step runs in the next loop
            # iteration, once every handler made ready in this tick has had its turn.
            self._next = loop.create_task(self._send())
            self._sending.add(self._next)  # a strong reference until it is done
            self._next.add_done_callback(self._sent)
        done: asyncio.Future[Any] = loop.create_future()
        self._batch.append(_Pending(keys, args, done))
        entry_id = await done
        if entry_id is None:
            return None
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._next is task:  # cancelled before it took its batch (shutdown)
            self._next = None
            batch, self._batch = self._batch, []
            for pending in batch:
                pending.done.cancel()

    async def _send(self) -> None:
        self._next = None
        batch, self._batch = self._batch, []
        try:
            # EVAL, not EVALSHA: a pipeline holding EVALSHA costs redis-py an extra SCRIPT
            # EXISTS round trip per execute, and EVAL never meets NOSCRIPT after a restart or
            # a failover. Redis caches the compiled script by its hash either way.
            # A timeout may leave XADDs done but unanswered: their spooled copies are then
            # duplicates, which the delivery-id dedup (and persist's uniqueness) absorbs.
            async with asyncio.timeout(self.budget_s):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for pending in batch:
                        pipe.eval(XADD_ONCE, len(pending.keys), *pending.keys, *pending.args)
                    replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - decided: each request gets it, and spools
            for pending in batch:
                _settle(pending.done, exc=_fresh(exc))
        else:
            # An error reply (OOM, WRONGTYPE) fails its own entry only.
            for pending, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    _settle(pending.done, exc=reply)
                else:
                    _settle(pending.done, result=reply)
        finally:
            for pending in batch:  # cancelled (shutdown): nobody is left waiting forever
                if not pending.done.done():
                    pending.done.cancel()

    def _spooled(self) -> bool:
        """Whether the spool holds anything, without a stat() per webhook: only this process
        appends to its spool, so once seen empty it stays empty until we append."""
        assert self.spool is not None
        if self._maybe_spooled:
            self._maybe_spooled = self.spool.size() > 0
        return self._maybe_spooled

    async def _to_spool(self, record: Record, *, cause: str) -> Published:
        assert self.spool is not None
        self._maybe_spooled = True  # before the append: a failed append may have written part
        try:
            await self.spool.append(record)
        except (SpoolFull, OSError) as exc:
            raise PublishError(f"Redis unavailable ({cause}) and spool refused: {exc}") from exc
        return Published(spooled=True)

    async def drain_spool(self) -> int:
        """Replay the spool into Redis (raises one of UNAVAILABLE while Redis is still away)."""
        if self.spool is None or self.spool.size() == 0:
            return 0

        async def replay(record: Record) -> None:
            await self._xadd(record.key, record.fields, record.delivery)

        drained = await self.spool.drain(replay)
        if drained:
            log.info("spool.drained", entries=drained)
        return drained

    async def keep_draining(self, every_s: float = 0.5) -> None:
        """The background task: drain whenever the spool holds something and Redis answers.
        It outlives every failure: a dead drainer would leave webhooks spooled until the cap."""
        failures = 0
        while True:
            pause = every_s
            try:
                if await self.drain_spool():
                    pause = 0  # more may have queued behind meanwhile: go on at once
                failures = 0
            except UNREACHABLE:
                pass  # still away: try again shortly
            except Exception as exc:  # noqa: BLE001 - logged, then retried after a backoff
                # Anything else, a Redis error reply (OOM, WRONGTYPE) included, is worth a line.
                failures += 1
                pause = min(BACKOFF_CAP_S, BACKOFF_S * 2**failures)
                # The type and message only: a traceback's frames would hold webhook bodies.
                log.error("spool.drain_failed", error_type=type(exc).__name__,
                          error=str(exc)[:300], retry_in_s=pause)  # fmt: skip
            await asyncio.sleep(pause)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.budget_s):
                return bool(await self.redis.ping())
        except UNAVAILABLE:
            return False
