"""No customer left unanswered: a turn whose reply is overdue is handed to humans, once.

The deadline is durable (`conversations.answer_due_at`, set when the turns worker emits a turn,
cleared when a reply covering it is posted). This worker claims overdue conversations with
`FOR UPDATE SKIP LOCKED` and, in that one short transaction with no network call, hands each
to humans: the conversation becomes human-handled (turns stop, a late bot reply is suppressed
by the gates), and a private note and a `handoff` go into the outbox under refs derived from
the turn, so the retry worker of the deliver group posts them once, with the usual retries.
A turn whose reply is in the outbox but not yet posted is not handed over: it is looked at again
one `answer_within_s` later. A reply may also still sit in `sb:outbound`, not yet recorded (the
deliver group behind, or restarting): while that group has any lag or pending entry, hand-offs
wait `BEHIND_WAIT` and look again, at most `BEHIND_MAX` times per overdue turn (counted per
worker process), then go ahead anyway. Deadlines are set by the turns worker's clock and
compared with the database's: clock skew between machines moves a hand-off by that much, no more.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from consumers import conversation as cv
from consumers.counters import Counters
from consumers.polling import PollingWorker
from consumers.store import DueAnswer, Store, Tx
from consumers.store.rows import DueTurn
from ingress import events
from ingress.connect import UNAVAILABLE
from ingress.events import OutboundKind
from ingress.topology import Topology

log = structlog.get_logger("unanswered")


class Outcome(enum.Enum):
    """What became of an overdue deadline."""

    HANDED_OFF = "handed_off"
    CLEARED = "cleared"
    POSTPONED = "postponed"


# A deliver group behind may hold the reply: wait this long, this many times at most (a minute
# past the deadline), then hand over anyway (deliver may be down for good).
BEHIND_WAIT = dt.timedelta(seconds=10)
BEHIND_MAX = 6
DELIVER_GROUP = "deliver"

NOTE = "Switchboard: the bot did not answer within {seconds} s; handing over to a human."


def answer_window(topology: Topology, *, account: int, inbox: int | None,
                  channel: str | None) -> tuple[dt.timedelta, int] | None:  # fmt: skip
    """How long a turn of this conversation may wait for its reply, and how many times the
    agent may extend it; None when the route turns the deadline off (or no route covers it)."""
    route = topology.route_for(account=account, inbox=inbox, channel=channel)
    if route is None:
        return None
    timing = route.timing(topology.turns)
    if timing.answer_within_s == 0:
        return None
    return dt.timedelta(seconds=timing.answer_within_s), timing.max_holds


async def expect_answer(tx: Tx, topology: Topology, turn: DueTurn, now: dt.datetime) -> None:
    """An emitted turn's reply is due `answer_within_s` from `now` (the turns worker calls
    this in the transaction that marks the turn emitted)."""
    window = answer_window(
        topology, account=turn.account_id, inbox=turn.inbox_id, channel=turn.channel
    )
    if window is not None:
        await tx.expect_answer(
            turn.account_id,
            turn.conversation_id,
            through=turn.last_inbound_message_id,
            due=now + window[0],
        )


def handoff_entries(due: DueAnswer, seconds: int) -> list[events.OutboundEntry]:
    """The note saying why, then the hand-off; refs derived from the turn, so a second claim
    of the same turn (there is none, but a retry of this code) records nothing new."""
    turn = cv.turn_id(due.account_id, due.conversation_id, due.answer_through)
    account, conversation = due.account_id, due.conversation_id
    return [
        events.OutboundEntry(
            account=account,
            conversation=conversation,
            kind=OutboundKind.MESSAGE,
            private=True,
            content=NOTE.format(seconds=seconds),
            ref=f"{turn}:unanswered:note",
        ),
        events.OutboundEntry(
            account=account,
            conversation=conversation,
            kind=OutboundKind.HANDOFF,
            ref=f"{turn}:unanswered:handoff",
        ),
    ]


class Unanswered(PollingWorker):
    """Hands to humans the conversations whose turn went unanswered past its deadline."""

    name = "unanswered"

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        topology: Topology,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        batch: int = 50,
    ) -> None:
        super().__init__()
        self.store = store
        self.topology = topology
        self.clock = clock  # None: the database's clock, the one deliver extends by
        self.batch = batch
        self.poll_s = max(topology.turns.poll_ms / 1000, 1.0)  # seconds matter, not ms
        self.metrics = Counters(redis, metrics_key=topology.key("metrics"))
        self.redis = redis
        self.outbound_key = topology.key("outbound")
        # Postponements for a deliver group behind, per overdue turn (account, conversation,
        # answer_through), with when the last one was made: bounded here, so a dead deliver
        # never stops hand-offs. A turn answered meanwhile never comes back due, so its entry
        # is forgotten once it is older than a postponement could be (see _forget_settled).
        self.behind_waits: dict[tuple[int, int, int], tuple[int, dt.datetime]] = {}

    async def step(self) -> int:
        return await self.hand_off_due()

    async def hand_off_due(self) -> int:
        """Settle the overdue deadlines: how many were due."""
        handed: list[DueAnswer] = []
        # Asked before the transaction: no Redis call while conversations are locked.
        behind = await self.deliver_behind()
        async with self.store.transaction() as tx:
            now = self.clock() if self.clock is not None else await tx.now()
            self._forget_settled(now)
            due = await tx.due_answers(now, self.batch)
            for item in due:
                outcome = await self._settle(tx, item, now, deliver_behind=behind)
                if outcome is Outcome.HANDED_OFF:
                    handed.append(item)
        # Counted and logged once committed: what is counted did happen.
        if handed:
            await self.metrics.add("turns.unanswered_handoffs", len(handed))
        for item in handed:
            log.warning("turn.unanswered_handed_off", account=item.account_id,
                        conversation=item.conversation_id, through=item.answer_through,
                        holds=item.answer_holds)  # fmt: skip
        return len(due)

    def _forget_settled(self, now: dt.datetime) -> None:
        """Drop the postponements of turns that did not come back due: answered, taken by a
        human, or cleared. Memory stays bounded by the turns overdue at one time."""
        horizon = now - BEHIND_WAIT * 3
        self.behind_waits = {
            key: (waits, last)
            for key, (waits, last) in self.behind_waits.items()
            if last >= horizon
        }

    async def deliver_behind(self) -> bool:
        """Might a reply still wait in `sb:outbound`? The deliver group has entries not yet
        read (lag) or not yet acknowledged (pending); unknown counts as behind."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.outbound_key)
            for group in groups:
                name = group["name"]
                if (name.decode() if isinstance(name, bytes) else name) != DELIVER_GROUP:
                    continue
                if int(group["pending"]) > 0:
                    return True
                # Redis before 7 gives no `lag`: is anything past the last delivered entry?
                last = group["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else str(last)
                after: Any = await self.redis.xrange(
                    self.outbound_key, min=f"({last}", max="+", count=1
                )
                return bool(after)
            # No deliver group yet: whatever is in the stream is still to be read.
            return int(await self.redis.xlen(self.outbound_key)) > 0
        except ResponseError:
            return False  # no stream: no reply waits in it
        except UNAVAILABLE:
            return True  # cannot tell: the bound on postponements still applies

    async def _settle(
        self, tx: Tx, item: DueAnswer, now: dt.datetime, *, deliver_behind: bool = False
    ) -> Outcome:
        """Hand one overdue conversation to humans, unless nothing is awaited any more or the
        agent's reply is on its way."""
        window = answer_window(
            self.topology, account=item.account_id, inbox=item.inbox_id, channel=item.channel
        )
        if (
            window is None  # the route no longer asks for a deadline
            or item.handler is not cv.Handler.BOT
            # An inactive conversation (the customer wrote in a newer one) is still handed
            # over: its turn was awaited, and no later turn of another conversation carries it.
            or item.status == "resolved"
            or item.answered_through >= item.answer_through
        ):
            # A human took it, it was resolved, or the reply was posted meanwhile.
            await tx.clear_answer(item.account_id, item.conversation_id)
            return Outcome.CLEARED
        within = window[0]
        if await tx.reply_in_flight(item.account_id, item.conversation_id, item.answer_through):
            # The agent did answer; Chatwoot has not taken the reply yet (retries, an outage
            # a hand-off would meet too). Look again later: posted, it clears the deadline;
            # failed for good, the customer is handed over then.
            await tx.postpone_answer(item.account_id, item.conversation_id, now + within)
            return Outcome.POSTPONED
        key = (item.account_id, item.conversation_id, item.answer_through)
        waits = self.behind_waits.get(key, (0, now))[0]
        if deliver_behind and waits < BEHIND_MAX:
            # The reply may be in sb:outbound, unread: a hand-off now would overtake it.
            self.behind_waits[key] = (waits + 1, now)
            await tx.postpone_answer(item.account_id, item.conversation_id, now + BEHIND_WAIT)
            log.info("turn.handoff_postponed", reason="deliver behind", waits=waits + 1)
            return Outcome.POSTPONED
        self.behind_waits.pop(key, None)
        conv = await tx.lock_conversation(item.account_id, item.conversation_id)
        assert conv is not None  # locked by due_answers a moment ago
        await tx.merge_signals(
            conv, [cv.Signal(handler=cv.Handler.HUMAN, at=now.timestamp(), why="unanswered")]
        )
        for entry in handoff_entries(item, int(within.total_seconds())):
            assert entry.ref is not None
            await tx.open_outbound(entry, ref=entry.ref, stream_id="", now=now)
        await tx.clear_answer(item.account_id, item.conversation_id)
        return Outcome.HANDED_OFF
