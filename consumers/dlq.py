"""The dead-letter stream as ops act on it (`switchboard dlq`): list, select, replay, purge.

Every dead letter can be replayed. A webhook (or any entry but a reply) goes back on its stream
as a new entry: persist is idempotent, so a replay twice stores it once. A reply lives in the
outbox, where it is `failed`; re-publishing its entry would be a no-op, so its row is queued
again instead and the deliver group's retry worker sends it. A dead letter is removed only
after its replay is written: an interrupted replay is simply run again.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from consumers import push
from consumers.clock import utcnow
from consumers.statuses import Outbound
from consumers.store import Store
from consumers.store.pushes import Push, PushSQL
from ingress import events
from ingress.events import DeadEntry
from ingress.topology import Topology

PAGE = 200


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Which dead letters: one by id, or all, optionally those dead-lettered since a time
    and those of one reason."""

    id: str | None = None
    since: dt.datetime | None = None
    reason: str | None = None

    def first_id(self) -> str:
        if self.id is not None:
            return self.id
        if self.since is not None:
            return f"{int(self.since.timestamp() * 1000)}-0"  # ids are the time they were added
        return "-"

    def matches(self, entry_id: str, dead: DeadEntry) -> bool:
        if self.id is not None and entry_id != self.id:
            return False
        return self.reason is None or dead.reason == self.reason


async def select(
    redis: aioredis.Redis, topology: Topology, selection: Selection, *, limit: int | None = None
) -> AsyncIterator[tuple[str, DeadEntry]]:
    """The selected dead letters, oldest first, read a page at a time.

    Only those present when the selection starts: a letter dead-lettered while a purge or a
    replay runs (a replayed entry failing again, say) is left for the next one."""
    start, given = selection.first_id(), 0
    end = selection.id
    if end is None:
        last: Any = await redis.xrevrange(topology.key("dead"), count=1)
        if not last:
            return
        end = _text(last[0][0])
    while limit is None or given < limit:
        rows: Any = await redis.xrange(topology.key("dead"), min=start, max=end, count=PAGE)
        for raw_id, fields in rows:
            entry_id = _text(raw_id)
            dead = events.decode(DeadEntry, fields)
            if selection.matches(entry_id, dead):
                yield entry_id, dead
                given += 1
                if limit is not None and given >= limit:
                    return
        if len(rows) < PAGE:
            return
        start = f"({_text(rows[-1][0])}"


class Outcome(enum.StrEnum):
    REPUBLISHED = "republished"  # back on its stream as a new entry
    REQUEUED = "requeued"  # a failed reply, queued again in the outbox
    LEFT = "left"  # a reply already sent (or still on its way): nothing to send


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    outcome: Outcome
    detail: str  # the new entry id, or the reply's ref and status


class Replayer:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: Store,
        topology: Topology,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.redis = redis
        self.store = store
        self.topology = topology
        self.clock = clock

    async def replay(self, entry_id: str, dead: DeadEntry) -> Replayed:
        """Replay one dead letter, then remove it from the dead stream."""
        if dead.group == push.GROUP and push.PUSH_APP_FIELD in dead.original:
            done = await self._push(dead)
        elif dead.stream == self.topology.key("outbound"):
            done = await self._reply(dead)
        else:
            done = await self._republish(dead.stream, dead.original)
        await self.redis.xdel(self.topology.key("dead"), entry_id)
        return done

    async def _reply(self, dead: DeadEntry) -> Replayed:
        # A reply without a ref of its own was recorded under its entry's id (see Deliverer).
        ref = dead.original.get("ref", b"").decode(errors="replace") or f"{dead.stream}:{dead.id}"
        async with self.store.transaction() as tx:
            found = await tx.requeue_outbound(ref)
        if found is None:
            # Never reached the outbox (it could not be decoded or recorded): put the entry
            # back, under the ref it would have had, so that replaying it twice sends it once.
            original = dict(dead.original)
            if dead.id and not original.get("ref"):
                original["ref"] = ref.encode()
            return await self._republish(dead.stream, original)
        if found is Outbound.FAILED:
            return Replayed(outcome=Outcome.REQUEUED, detail=ref)
        return Replayed(outcome=Outcome.LEFT, detail=f"{ref} is {found}")

    async def _push(self, dead: DeadEntry) -> Replayed:
        """A push that failed for good is queued again in `pushes` (re-publishing its turn
        would hand it to the stream's other readers twice); a bad inline reply, or a push
        already answered, is left as it is."""
        turn = dead.original.get("turn", b"").decode(errors="replace")
        app = dead.original[push.PUSH_APP_FIELD].decode(errors="replace")
        if "reply" in dead.original:
            return Replayed(outcome=Outcome.LEFT, detail=f"a bad reply of {app} to {turn}")
        async with self.store.transaction() as tx:
            found = await PushSQL(tx.conn).requeue_push(turn, app)
        if found is Push.FAILED:
            return Replayed(outcome=Outcome.REQUEUED, detail=f"push of {turn} to {app}")
        return Replayed(outcome=Outcome.LEFT, detail=f"push of {turn} to {app} is {found}")

    async def _republish(self, stream: str, fields: dict[str, bytes]) -> Replayed:
        new_id = await self.redis.xadd(stream, events.wire(fields))  # type: ignore[arg-type]
        return Replayed(outcome=Outcome.REPUBLISHED, detail=_text(new_id))


async def purge(redis: aioredis.Redis, topology: Topology, selection: Selection) -> int:
    """Delete the selected dead letters (one by one: one dead-lettered meanwhile stays)."""
    removed = 0
    async for entry_id, _ in select(redis, topology, selection):
        removed += int(await redis.xdel(topology.key("dead"), entry_id))
    return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
