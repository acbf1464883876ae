"""The turns worker: emits each conversation's due turn to its route's stream, once.

Turn scheduling lives in PostgreSQL (persist sets `turn_due_at`), so it survives restarts.
A worker claims due turns in a short transaction (`FOR UPDATE SKIP LOCKED`, then a lease
pushes `turn_due_at` forward), XADDs them with no transaction open, then marks them emitted.
A worker that dies between XADD and mark leaves the turn to be emitted again after the lease,
with the same turn id: the XADD is idempotent on that id, so each burst is emitted once.

No polling latency: the transaction that makes a turn due now NOTIFYs at its commit, which
wakes the worker; between notifications it sleeps until the earliest due time it knows of,
capped by `poll_ms`, so a lost notification costs at most `poll_ms`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers import unanswered
from consumers.clock import utcnow
from consumers.conversation import Handler, turn_id
from consumers.counters import TURN_EMITTED
from consumers.errors import StoreError
from consumers.polling import PollingWorker
from consumers.store import DueTurn, Store, Tx
from consumers.store.notify import TURNS_DUE, Listener
from consumers.store.timeline import TimelineSQL
from consumers.timeline import TurnLogged
from ingress import events
from ingress.topology import Topology

log = structlog.get_logger("turns")

# Long enough for an XADD; short enough that a dead worker's turns are not late by much.
LEASE = dt.timedelta(seconds=30)
# A turn id is remembered well past any lease: a re-emission after a crash is dropped.
EMITTED_TTL_S = 24 * 3600

# XADD unless this turn id was added already; the marker shares the stream's Cluster slot.
XADD_TURN_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return id
"""


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A turn leased for emission, and the entry that carries it."""

    turn: DueTurn
    entry: events.TurnEntry
    key: str


class TurnEmitter(PollingWorker):
    name = "turns"

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        topology: Topology,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        batch: int = 50,
    ) -> None:
        super().__init__()
        self.store = store
        self.redis = redis
        self.topology = topology
        self.clock = clock
        self.batch = batch
        self.poll_s = topology.turns.poll_ms / 1000
        self._xadd_once: Any = redis.register_script(XADD_TURN_ONCE)
        self._woken = asyncio.Event()
        self._listener = Listener(store, TURNS_DUE, self._woken.set)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self._listener.close()

    async def step(self) -> int:
        return await self.emit_due()

    async def pause(self, seconds: float) -> None:
        """Until notified of a turn due now, or the earliest known turn is due, or `seconds`
        (the fallback poll) have passed. A notification sent while a step ran is kept: the
        next pause returns at once."""
        await self._listener.ensure()
        try:
            async with self.store.transaction() as tx:
                due = await tx.next_turn_due()
        except StoreError:
            due = None  # the next step meets the outage and waits it out
        # A due time already past is a turn the last step could not take (another worker's,
        # or failing): waiting for it would spin, so only a future one shortens the wait.
        until = (due - self.clock()).total_seconds() if due is not None else seconds
        if until > 0:
            seconds = min(seconds, until)
        stopping = asyncio.ensure_future(self._stopping.wait())
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({stopping, woken}, timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            stopping.cancel()
            woken.cancel()
        self._woken.clear()

    async def emit_due(self) -> int:
        """Emit the turns due now; how many due conversations were handled."""
        due, claimed = await self.claim()
        published: list[Claimed] = []
        try:
            for item in claimed:
                await self.publish(item)
                published.append(item)
        finally:
            # What went out is marked even when Redis failed half-way; the rest waits for
            # its lease to end.
            await self.mark(published)
        return due

    async def claim(self) -> tuple[int, list[Claimed]]:
        """Lease the due turns (one short transaction, no network): how many were due, and
        the turns to emit. A due turn with nothing to emit is marked done right here."""
        now = self.clock()
        claimed: list[Claimed] = []
        async with self.store.transaction() as tx:
            due = await tx.due_turns(now, self.batch)
            for turn in due:
                item = await self._turn(tx, turn)
                if item is None:
                    await tx.mark_emitted(turn)
                else:
                    await tx.lease_turn(turn, now + LEASE)
                    claimed.append(item)
        return len(due), claimed

    async def _turn(self, tx: Tx, turn: DueTurn) -> Claimed | None:
        route = self.topology.route_for(
            account=turn.account_id, inbox=turn.inbox_id, channel=turn.channel
        )
        # A human took the conversation while the burst was waiting: no turn.
        if route is None or turn.handler is not Handler.BOT:
            return None
        timing = route.timing(self.topology.turns)
        content = await tx.turn_content(turn, history=timing.history, private=route.history_private)
        if not content.messages:
            return None
        entry = events.TurnEntry(
            turn=turn_id(turn.account_id, turn.conversation_id, turn.last_inbound_message_id),
            account=turn.account_id,
            inbox=turn.inbox_id,
            conversation=turn.conversation_id,
            channel=turn.channel,
            contact=turn.contact_id,
            through=turn.last_inbound_message_id,
            messages=content.messages,
            route=route.name,
            history=content.history,
            contact_details=content.contact,
            inbox_name=content.inbox_name,
            labels=content.labels,
            custom_attributes=content.custom_attributes,
            additional_attributes=content.additional_attributes,
        )
        return Claimed(turn=turn, entry=entry, key=self.topology.key(route.stream))

    async def publish(self, item: Claimed) -> None:
        """XADD the turn unless its id was added already (by a worker that died after)."""
        fields = events.encode(item.entry)
        marker = f"{{{item.key}}}:turn:{item.entry.turn}"
        args: list[Any] = [EMITTED_TTL_S]
        for name, value in fields.items():
            args += [name, value]
        added = await self._xadd_once(keys=[item.key, marker], args=args)
        log.info("turn.emitted" if added else "turn.already_emitted", turn=item.entry.turn,
                 message=item.entry.through, conversation=item.entry.conversation,
                 stream=item.key, messages=len(item.entry.messages))  # fmt: skip

    async def mark(self, published: list[Claimed]) -> None:
        if not published:
            return
        now = self.clock()
        waits: list[float] = []
        async with self.store.transaction() as tx:
            for item in published:
                if self.counters is not None:  # stored to emitted, for the latest message
                    waits += await tx.since_stored(item.turn.account_id, [item.entry.through])
                await tx.mark_emitted(item.turn)
                # Its reply is due from now on, or the conversation goes to humans.
                await unanswered.expect_answer(tx, self.topology, item.turn, now)
            # For the conversation's timeline (`switchboard conversation`, the ops page).
            await TimelineSQL(tx.conn).record_turns([_logged(i) for i in published], now)
        if self.counters is not None:
            await self.counters.observe(TURN_EMITTED, waits)


def _logged(item: Claimed) -> TurnLogged:
    entry = item.entry
    return TurnLogged(
        turn=entry.turn,
        account_id=entry.account,
        conversation_id=entry.conversation,
        through=entry.through,
        message_ids=[m.id for m in entry.messages],
        route=entry.route,
        stream=item.key,
    )
