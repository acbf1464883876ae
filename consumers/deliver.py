"""The deliver group: agent replies into Chatwoot, each posted once.

A reply is recorded by its `ref` and marked `sending` (committed) before the POST, and the ref
travels as `content_attributes.ext_ref`. When an attempt's outcome is unknown (timeout, reset,
crash), the next one first looks for proof that Chatwoot has the message — our echo webhook, or
the conversation's message list when a user token is configured — and only then sends again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import structlog

from consumers import conversation as cv
from consumers import gates, statuses
from consumers.chatwoot import ChatwootClient
from consumers.clock import utcnow
from consumers.errors import ChatwootError, PermanentError, RetryableError
from consumers.runner import StreamEntry
from consumers.statuses import Outbound
from consumers.store import OutboundRow, Store, Tx
from ingress import events
from ingress.events import OutboundKind
from ingress.topology import Route, Topology

UNROUTED = Route(name="unrouted")

log = structlog.get_logger("deliver")

# How long a `sending` reply belongs to the deliverer that started it; past that, an attempt
# is presumed dead and the next one checks for an echo before sending.
LEASE = dt.timedelta(seconds=30)
# After an ambiguous failure, with no user token to list messages, how long to wait for the
# echo webhook (Chatwoot sends it within seconds of saving) before concluding it was not saved.
ECHO_WAIT = dt.timedelta(seconds=20)


class InFlight(RetryableError):
    """Another deliverer is sending this ref right now."""


class Deliverer:
    def __init__(
        self,
        store: Store,
        client: ChatwootClient,
        topology: Topology,
        *,
        stream_key: str,
        clock: Callable[[], dt.datetime] = utcnow,
        lease: dt.timedelta = LEASE,
        echo_wait: dt.timedelta = ECHO_WAIT,
    ) -> None:
        self.store = store
        self.client = client
        self.topology = topology
        self.stream_key = stream_key
        self.clock = clock
        self.lease = lease
        self.echo_wait = echo_wait

    async def __call__(self, entry: StreamEntry) -> None:
        reply = events.decode(events.OutboundEntry, entry.fields)
        # Without a ref, the entry id is one: a re-published entry stays one reply.
        ref = reply.ref or f"{self.stream_key}:{entry.id}"
        structlog.contextvars.bind_contextvars(
            ref=ref, account=reply.account, conversation=reply.conversation
        )
        proceed = await self._begin(reply, ref, entry.id)
        if not proceed:
            return
        try:
            message_id = await self._send(reply, ref)
        except ChatwootError as exc:
            await self._failed(ref, exc)
            if not exc.retryable:
                raise PermanentError(str(exc)) from exc
            raise
        async with self.store.transaction() as tx:
            row = await tx.lock_outbound(ref)
            assert row is not None
            status = statuses.advance(Outbound(row.status), Outbound.SENT)
            await tx.set_outbound(ref, status=status, chatwoot_message_id=message_id)
            await self._after_sent(tx, reply)
        log.info("reply.sent", kind=str(reply.kind), chatwoot_message=message_id)

    async def _after_sent(self, tx: Tx, reply: events.OutboundEntry) -> None:
        through = cv.turn_through(reply.turn)
        if through is not None and reply.kind is OutboundKind.MESSAGE:
            await tx.mark_answered(reply.account, reply.conversation, through)
        if reply.kind is OutboundKind.HANDOFF:
            # The agent handed the conversation to humans: turns stop from now on.
            conv = await tx.lock_conversation(reply.account, reply.conversation)
            if conv is not None:
                now = self.clock().timestamp()
                takeover = cv.Takeover(human_since=conv.human_since, bot_since=conv.bot_since)
                merged = takeover.merge(
                    [cv.Signal(handler=cv.Handler.HUMAN, at=now, why="handoff")]
                )
                await tx.set_takeover(
                    reply.account,
                    reply.conversation,
                    handler=merged.handler,
                    human_since=merged.human_since,
                    bot_since=merged.bot_since,
                )

    async def _begin(self, reply: events.OutboundEntry, ref: str, stream_id: str) -> bool:
        """Record the reply and claim this attempt; False when nothing is left to send."""
        now = self.clock()
        async with self.store.transaction() as tx:
            row = await tx.open_outbound(reply, ref=ref, stream_id=stream_id)
            if Outbound(row.status) in statuses.OUTBOUND_DONE:
                log.info("reply.skipped", status=row.status, reason="already done")
                return False
            if row.status == Outbound.QUEUED and (reason := await self._closed(tx, reply)):
                await tx.set_outbound(ref, status=Outbound.SUPPRESSED, error=reason)
                log.info("reply.suppressed", reason=reason)
                return False
            if row.status == Outbound.SENDING:
                if row.next_attempt_at is not None and row.next_attempt_at > now:
                    raise InFlight(f"{ref} is being sent until {row.next_attempt_at}")
                posted = await self._already_posted(tx, reply, row)
                if posted is not None:
                    await tx.set_outbound(ref, status=Outbound.SENT, chatwoot_message_id=posted)
                    log.info("reply.recovered", chatwoot_message=posted)
                    return False
            await tx.begin_attempt(
                ref,
                attempts=row.attempts + 1,
                lease_until=now + self.lease,
                known_through=await tx.last_message_id(reply.account, reply.conversation),
            )
        return True

    async def _closed(self, tx: Tx, reply: events.OutboundEntry) -> str | None:
        context = await tx.reply_context(reply.account, reply.conversation)
        if context is None:
            return None
        route = self.topology.route_for(
            account=reply.account, inbox=context.inbox_id, channel=context.channel
        )
        return gates.closed_because(
            reply,
            handler=context.handler,
            status=context.status,
            last_inbound=context.last_inbound_message_id,
            route=route or UNROUTED,
        )

    async def _already_posted(
        self, tx: Tx, reply: events.OutboundEntry, row: OutboundRow
    ) -> int | None:
        echo = await tx.echo_of(row.ref)
        if echo is not None or reply.kind is not OutboundKind.MESSAGE:
            return echo
        if self.client.user_token is None:
            return None
        listed = await self.client.list_messages(
            reply.account, reply.conversation, after=row.known_through
        )
        return next((m.id for m in listed if m.ext_ref == row.ref), None)

    async def _send(self, reply: events.OutboundEntry, ref: str) -> int | None:
        kind = reply.kind
        if kind is OutboundKind.MESSAGE:
            created = await self.client.create_message(
                reply.account,
                reply.conversation,
                content=reply.content,
                private=reply.private,
                content_attributes={**reply.content_attributes, "ext_ref": ref},
            )
            return created.id
        if kind is OutboundKind.HANDOFF:
            await self.client.toggle_status(reply.account, reply.conversation, "open")
        elif kind is OutboundKind.RESOLVE:
            await self.client.toggle_status(reply.account, reply.conversation, "resolved")
        else:
            on = kind is OutboundKind.TYPING_ON
            await self.client.toggle_typing(reply.account, reply.conversation, on=on)
        return None

    async def _failed(self, ref: str, exc: ChatwootError) -> None:
        async with self.store.transaction() as tx:
            if not exc.retryable:
                await tx.set_outbound(ref, status=Outbound.FAILED, error=str(exc))
                log.warning("reply.failed", error=str(exc), status=exc.status)
                return
            # Whether or not Chatwoot got it, the reply stays `sending`: the next attempt looks
            # for proof it was posted before sending again. When it may have landed and only
            # the echo can tell, that attempt waits for the echo to have had time to arrive.
            wait = exc.ambiguous and self.client.user_token is None
            until = self.clock() + self.echo_wait if wait else None
            await tx.set_outbound(ref, status=Outbound.SENDING, error=str(exc))
            await tx.hold_until(ref, until)
