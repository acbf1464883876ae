"""The persist group: webhook entries into PostgreSQL rows, and customer messages into turns.

Every effect is order-independent: rows are upserts guarded by Chatwoot's versions (message id,
conversation `updated_at`), and who handles a conversation comes from timestamped signals kept
as maxima (see conversation.py). The effect of each event is listed in docs/events.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from consumers import attributes, decisions, echoes, statuses
from consumers import conversation as cv
from consumers.clock import utcnow
from consumers.counters import WEBHOOK_STORED, Counters
from consumers.errors import PermanentError, StoreError
from consumers.runner import StreamEntry, by_conversation
from consumers.store import ConversationRow, MessageRow, Store, Tx
from consumers.store.buffered import Buffered, Preload
from ingress import events, views
from ingress.errors import EntryDecodeError
from ingress.topology import Topology

log = structlog.get_logger("persist")

MESSAGE_EVENTS = {"message_created", "message_updated"}
CONVERSATION_EVENTS = {
    "conversation_created",
    "conversation_updated",
    "conversation_status_changed",
    "conversation_opened",
    "conversation_resolved",
}
CONTACT_EVENTS = {"contact_created", "contact_updated"}
# Their body is `{conversation: <snapshot>, user, is_private}`: the snapshot is applied like
# any other (newer only); the typing itself changes nothing stored.
TYPING_EVENTS = {"conversation_typing_on", "conversation_typing_off"}
# Automation-rule and macro webhooks are `Conversation#webhook_data` with their own event name
# and no `changed_attributes` (chatwoot.md §1): a plain snapshot, its detail saying whence.
SNAPSHOTS = {
    "macro.executed": "snapshot after a macro",
    "automation_event.conversation_created": "snapshot from an automation rule",
    "automation_event.conversation_updated": "snapshot from an automation rule",
    "automation_event.conversation_opened": "snapshot from an automation rule",
    "automation_event.conversation_resolved": "snapshot from an automation rule",
    # The rule's payload holds the conversation, not the message (which comes by its own
    # message_created): only the snapshot is applied.
    "automation_event.message_created": "snapshot from an automation rule (the message "
    "itself comes as message_created)",
}
# Stored in the audit trail only, each for its reason.
IGNORED = {
    "webwidget_triggered": "a widget opened: no conversation yet",
    "inbox_created": "inboxes are not mirrored (the payload holds channel secrets)",
    "inbox_updated": "inboxes are not mirrored (the payload holds channel secrets)",
}

Outcome = tuple[str, str | None]  # (applied|duplicate|ignored, detail)
# Where an entry's statements go: a transaction, or the fast path's buffer (store/buffered.py),
# which offers the same statements over rows read beforehand and writes them set-based.
Statements = Tx | Buffered
# (the entry's log context, entry, outcome): logged once committed, each with its own ids
Applied = tuple[dict[str, object], events.EventEntry, Outcome | None]

# The `source` of entries from the automation path (ingress/automation.py). The path refuses
# other events; persist ignores them too, for entries stored before it did or replayed.
AUTOMATION_SOURCE = "automation"
# Meta webhooks (ingress/meta.py) are Instagram's, not Chatwoot's: the forward group routes
# them; persist only keeps their audit row, whatever their body or event name says.
META_SOURCE = "meta"
# How far ahead of its receive time a snapshot's `updated_at` may be (clock skew between
# Chatwoot and us). Snapshots are applied newest-first: one dated far ahead would stand
# against every real change after it, and silence the conversation.
FUTURE_SLACK_S = 300.0

# Concurrent transactions a batch is spread over (by conversation): well within the pool of 10
# connections, which the group's one-by-one path and the dead records also use.
LANES = 4
# Entries per transaction of a lane. The conversation rows a transaction locks stay locked until
# its commit, and the turns worker (mark_emitted) and deliver (mark_posted) wait for them: a
# lane of a 256-entry batch in one transaction held them for its whole run (about 64 entries ×
# 7 round trips), which made the reply latency grow with the load. 32 still shares a commit
# flush 32 ways.
HOLD = 32
# Entries per transaction when the fast path takes them: a set-based run holds its rows for a
# read, a write and the commit (three round trips whatever its length), not 7 round trips an
# entry, so 128 of them hold the rows shorter than 32 one by one did; the transaction still
# ends once `hold` entries have gone one by one.
FAST_HOLD = 128


class Persister:
    """The handler of the persist group: one webhook entry, one transaction; or a batch of
    entries, one transaction with a savepoint each."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        *,
        bot_id: int | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        lanes: int = LANES,
        hold: int = HOLD,
        counters: Counters | None = None,
        fast: bool = True,
        fast_hold: int = FAST_HOLD,
    ) -> None:
        self.store = store
        self.topology = topology
        self.bot_id = bot_id
        self.clock = clock
        self.lanes = max(1, lanes)
        self.hold = max(1, hold)
        self.counters = counters  # None: no latency observed
        # The consumer group's log context (bound by the runner, the same in every lane): what
        # each entry's lines start from.
        self._base: dict[str, object] = {}
        # The set-based path for runs of entries (consumers/store/buffered.py); off, every
        # entry of a batch takes a savepoint of its own (what the fast path is compared with).
        self.fast = fast
        self.fast_hold = max(self.hold, fast_hold) if fast else self.hold
        self.taken_fast = 0  # entries the fast path committed (the benchmark reports it)

    async def __call__(self, entry: StreamEntry) -> None:
        event = _event(entry)
        async with self.store.transaction() as tx:
            outcome = await self._persist(tx, entry, event)
        _persisted(outcome)
        await self._observe([event] if outcome is not None else [])

    async def batch(self, entries: list[StreamEntry]) -> list[bool]:
        """The runner's batch entry point. Conversations are spread over `lanes` concurrent
        transactions (a round trip to PostgreSQL is what an entry waits on most); each lane
        holds its entries in stream order, one transaction for all of them (one commit, one
        flush), each entry in a savepoint of its own, so its effects stay all-or-nothing.
        Says which entries are committed; one that failed, the later entries of its
        conversation (their order is kept), and a failed lane's entries are left to the
        runner's one-by-one path, which decides them as ever."""
        lanes: list[list[int]] = [[] for _ in range(min(self.lanes, len(entries)))]
        for n, entry in enumerate(entries):
            lanes[zlib.crc32(by_conversation(entry)) % len(lanes)].append(n)
        done = [False] * len(entries)
        results = await asyncio.gather(
            *(self._lane([entries[n] for n in lane]) for lane in lanes if lane),
            return_exceptions=True,
        )
        for lane, result in zip([lane for lane in lanes if lane], results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancelled: not ours to swallow
                log.warning("batch.lane_failed", entries=len(lane), error=str(result)[:200])
                continue
            for n, ok in zip(lane, result, strict=True):
                done[n] = ok
        return done

    async def _lane(self, entries: list[StreamEntry]) -> list[bool]:
        """`entries` in transactions of up to `fast_hold` entries (`hold` of them one by one),
        one after another; raises when the first does not commit. One that does not commit
        leaves its entries and the later ones to the one-by-one path (a conversation's order is
        kept: they come after it)."""
        done: list[bool] = []
        failed: set[bytes] = set()
        start = 0
        while start < len(entries):
            chunk = entries[start : start + self.fast_hold]
            try:
                done += await self._chunk(chunk, failed)
            except Exception as exc:
                if not start:
                    raise
                log.warning("batch.lane_failed", entries=len(entries) - start, error=str(exc)[:200])
                return done + [False] * (len(entries) - start)
            start = len(done)
        return done

    async def _chunk(self, entries: list[StreamEntry], failed: set[bytes]) -> list[bool]:
        """One transaction over a prefix of `entries`, in stream order: runs of entries
        set-based (the fast path, `_run`), the others each in a savepoint of its own, until
        `hold` of them went so; the prefix's flags; raises when it does not commit. `failed`:
        the conversations of the lane whose entries wait for the one-by-one path."""
        done = [False] * len(entries)
        outcomes: list[Applied] = []
        self._base = structlog.contextvars.get_contextvars()  # the group's, bound by the runner
        async with self.store.transaction() as tx:
            n = alone = 0
            while n < len(entries) and alone < self.hold:
                count = len(entries) - n  # without the fast path: all of them one by one
                if self.fast and _may_run(entries[n]):
                    flags, ok = await self._run(tx, entries[n:], failed, outcomes)
                    if ok:
                        done[n : n + len(flags)] = flags
                        n += len(flags)
                        count = 1  # the entry the run stopped at (if any) goes alone
                    else:
                        count = len(flags)  # the run rolled back: its entries one by one
                count = min(count, len(entries) - n, self.hold - alone)
                for k in range(n, n + count):
                    done[k] = await self._one(tx, entries[k], failed, outcomes)
                n += count
                alone += count
        # Logged once committed, each with its own entry's context.
        for context, _, outcome in outcomes:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(**context)
            _persisted(outcome)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**self._base)
        await self._observe([event for _, event, outcome in outcomes if outcome is not None])
        return done[:n]

    def _entry_context(self, entry: StreamEntry) -> None:
        """Each entry's lines carry its own ids only (delivery, message), never the previous
        entry's: the group's context, and this entry's id."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**self._base, entry=entry.id)

    async def _one(
        self, tx: Tx, entry: StreamEntry, failed: set[bytes], outcomes: list[Applied]
    ) -> bool:
        """One entry in a savepoint of its own; False when it waits for the one-by-one path."""
        conversation = by_conversation(entry)
        if conversation in failed:
            return False
        self._entry_context(entry)
        try:
            async with tx.savepoint():
                event = _event(entry)
                outcome = await self._persist(tx, entry, event)
        except Exception as exc:  # noqa: BLE001 - handled again alone, and decided there
            if isinstance(exc, StoreError) and exc.outage:
                raise  # the connection is gone: the lane goes one by one
            log.debug("entry.batch_failed", error=str(exc)[:200])
            failed.add(conversation)
            return False
        outcomes.append((structlog.contextvars.get_contextvars(), event, outcome))
        return True

    async def _run(
        self, tx: Tx, entries: list[StreamEntry], failed: set[bytes], outcomes: list[Applied]
    ) -> tuple[list[bool], bool]:
        """The fast path: the longest prefix of `entries` that persist's own code decides over
        rows read (and locked) beforehand, written set-based in one savepoint (each entry's
        effects are in it whole, or none is). Returns the prefix's flags (False: its
        conversation waits for the one-by-one path) and whether it is committed; a prefix
        that is not goes one by one."""
        live = [e for e in entries if by_conversation(e) not in failed]
        preload = await Preload.read(tx.conn, **_keys(live))
        stop, buffer, applied = await self._simulate(preload, entries, failed)
        if stop < len(entries) and stop:
            # The entry it stopped at left part of its effects in the buffer: again without.
            stop, buffer, applied = await self._simulate(preload, entries[:stop], failed)
        if not applied:
            return [False] * stop, True
        try:
            async with tx.savepoint():
                await buffer.flush(tx.conn)
        except Exception as exc:  # noqa: BLE001 - its entries go one by one, decided there
            if isinstance(exc, StoreError) and exc.outage:
                raise
            log.debug("batch.run_failed", entries=stop, error=str(exc)[:200])
            return [False] * stop, False
        outcomes += applied
        self.taken_fast += len(applied)
        return [by_conversation(e) not in failed for e in entries[:stop]], True

    async def _simulate(
        self, preload: Preload, entries: list[StreamEntry], failed: set[bytes]
    ) -> tuple[int, Buffered, list[Applied]]:
        """`entries` through persist's code over a buffer, until one it cannot take (that
        entry's index, or len(entries))."""
        buffer = Buffered(preload)
        applied: list[Applied] = []
        for n, entry in enumerate(entries):
            if by_conversation(entry) in failed:
                continue
            self._entry_context(entry)
            try:
                event = _event(entry)
                outcome = await self._persist(buffer, entry, event)
            except Exception as exc:  # noqa: BLE001 - the per-entry path takes it, and decides
                log.debug("entry.not_fast", error=str(exc)[:200])
                return n, buffer, applied
            applied.append((structlog.contextvars.get_contextvars(), event, outcome))
        return len(entries), buffer, applied

    async def _observe(self, stored: list[events.EventEntry]) -> None:
        """Webhook received to stored: from the ingress's receipt to the commit just made.
        Backfilled events were never received as webhooks: not counted."""
        if self.counters is None:
            return
        now = self.clock().timestamp()
        waits = [now - e.received_at / 1000 for e in stored if e.source != "backfill"]
        await self.counters.observe(WEBHOOK_STORED, waits)

    async def _persist(
        self, tx: Statements, entry: StreamEntry, event: events.EventEntry
    ) -> Outcome | None:
        """The entry's effects in `tx`: its outcome, None when it was processed already."""
        if not await tx.record_event(entry.id, event):
            return None
        try:
            outcome, detail = await self._apply(tx, event)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise PermanentError(f"{event.event} body does not fit its view: {exc}") from exc
        if (outcome, detail) != ("applied", None):  # what record_event stored: a round trip less
            await tx.set_outcome(entry.id, outcome, detail)
        return outcome, detail

    async def dead(self, entry: StreamEntry, dead: decisions.Dead) -> None:
        """The runner's `on_dead`: the audit row of a webhook it dead-letters, with the reason,
        in a transaction of its own (the handler's rolled back), so `switchboard replay
        --outcome dead` finds it once the cause is fixed."""
        detail = f"{dead.reason}: {dead.error}".replace("\x00", "\ufffd")
        async with self.store.transaction() as tx:
            await tx.record_dead(entry.id, salvage(entry), detail)
        log.info("event.dead_recorded", reason=dead.reason)

    async def _apply(self, tx: Statements, event: events.EventEntry) -> Outcome:
        name = event.event
        if event.source == META_SOURCE:
            return "ignored", "a Meta webhook: routed by the forward group (meta_forwards)"
        if event.source == AUTOMATION_SOURCE and not _from_automation(name):
            # A token holder could otherwise forge a customer message or a snapshot.
            return (
                "ignored",
                f"{name or 'an event without a name'} is not taken from the automation path",
            )
        if name in MESSAGE_EVENTS:
            return await self._message(tx, event, views.message_decoder.decode(event.body))
        if name in CONVERSATION_EVENTS:
            view = views.conversation_decoder.decode(event.body)
            account = _account(view.account, event)
            if account is None:
                return "ignored", "no account id in the payload"
            if (ahead := _ahead(view, event)) is not None:
                return "ignored", ahead
            await self._conversation(tx, account, view, event=name, changed=view.changed_attributes)
            return "applied", None
        if name in CONTACT_EVENTS:
            return await self._contact(tx, event, views.contact_decoder.decode(event.body))
        if name in SNAPSHOTS:
            view = views.conversation_decoder.decode(event.body)
            return await self._snapshot(tx, event, view, detail=SNAPSHOTS[name])
        if name in TYPING_EVENTS:
            typing = views.typing_decoder.decode(event.body)
            if typing.conversation is None:
                return "ignored", "typing indicator without a conversation"
            detail = "typing indicator: its conversation snapshot"
            return await self._snapshot(tx, event, typing.conversation, detail=detail)
        if name in IGNORED:
            return "ignored", IGNORED[name]
        if name.startswith("automation_event."):
            return "ignored", f"no effect for {name}: its payload is not a conversation"
        return "ignored", f"no effect for {name or 'an event without a name'}"

    async def _snapshot(
        self, tx: Statements, event: events.EventEntry, view: views.Conversation, *, detail: str
    ) -> Outcome:
        """A conversation snapshot carried by an event that reports no change of its own:
        applied when newer, its state's signals dated by its `updated_at`."""
        account = _account(view.account, event)
        if account is None:
            return "ignored", "no account id in the payload"
        if (ahead := _ahead(view, event)) is not None:
            return "ignored", ahead
        await self._conversation(tx, account, view, event=event.event)
        return "applied", detail

    async def _contact(
        self, tx: Statements, event: events.EventEntry, contact: views.Contact
    ) -> Outcome:
        account = _account(contact.account, event)
        if account is None:
            return "ignored", "no account id in the payload"
        extra = attributes.of_contact(contact)
        await tx.upsert_contact(
            account_id=account,
            contact_id=contact.id,
            name=contact.name,
            email=contact.email,
            phone=contact.phone_number,
            identifier=contact.identifier,
            version=_contact_version(contact, event),
            custom_attributes=extra.custom_attributes,
            additional_attributes=extra.additional_attributes,
        )
        return "applied", None

    async def _conversation(
        self,
        tx: Statements,
        account: int,
        view: views.Conversation,
        *,
        event: str,
        changed: list[dict[str, object]] | None = None,
        inbox: views.InboxRef | None = None,
    ) -> ConversationRow:
        """Fields from the newest snapshot (by `updated_at`); signals merged from every one.
        `inbox`: a message event's, whose name the snapshot lacks."""
        existing = await tx.lock_conversation(account, view.id)
        policy = self.topology.policy_for(
            account=account, inbox=view.inbox_id, channel=view.channel
        )
        signals = cv.snapshot_signals(view, event=event, changed=changed, policy=policy)
        row = _conversation_row(account, view, inbox)
        if existing is None:
            row = _with_takeover(row, cv.Takeover(human_since=None, bot_since=None), signals)
            if await tx.insert_conversation(row):
                return row
            # Another consumer inserted it meanwhile: take the update path on its row.
            existing = await tx.lock_conversation(account, view.id)
            assert existing is not None
        takeover = cv.Takeover(human_since=existing.human_since, bot_since=existing.bot_since)
        if row.version > existing.version:
            row = _with_takeover(row, takeover, signals)
            await tx.update_conversation(row)
        else:
            row = await self._merge_signals(tx, existing, signals)
            await _fill_inbox_name(tx, existing, inbox)
        if existing.handler is cv.Handler.HUMAN and row.handler is cv.Handler.BOT:
            await self._resume(tx, row)
        return row

    async def _resume(self, tx: Statements, conv: ConversationRow) -> None:
        """Back to the bot: a customer message written since then, skipped because its webhook
        came before the change's (a human still held it), gets its turn after all."""
        if conv.bot_since is None:
            return
        last = await tx.resume_skipped(conv.account_id, conv.conversation_id, conv.bot_since)
        if last is not None:
            log.info("turn.resumed", through=last)
            await self._turn_input(tx, conv, last)

    async def _merge_signals(
        self, tx: Statements, conv: ConversationRow, signals: list[cv.Signal]
    ) -> ConversationRow:
        merged = await tx.merge_signals(conv, signals)
        if merged.handler != conv.handler:
            log.info("conversation.handed", handler=merged.handler, why=signals[-1].why)
        return merged

    async def _message(
        self, tx: Statements, event: events.EventEntry, msg: views.Message
    ) -> Outcome:
        account = _account(msg.account, event)
        if account is None or msg.conversation is None:
            raise PermanentError("message event without account or conversation")
        _check_time("message.created_at", msg.created_at)
        for embedded in msg.conversation.messages:
            _check_time("conversation.messages[].updated_at", embedded.updated_at)
        # The correlation id's next link: the delivery id (bound already) to the message id,
        # which the turn's id and `through` carry on to the reply's log lines.
        structlog.contextvars.bind_contextvars(message=msg.id)
        conv = await self._conversation(
            tx, account, msg.conversation, event=event.event, inbox=msg.inbox
        )
        who = cv.speaker(msg)
        if who.kind is cv.SenderKind.CONTACT and msg.sender and msg.sender.id is not None:
            extra = attributes.of_contact(msg.sender)
            await tx.upsert_contact(
                account_id=account,
                contact_id=msg.sender.id,
                name=msg.sender.name,
                email=msg.sender.email,
                phone=msg.sender.phone_number,
                identifier=msg.sender.identifier,
                version=int((cv.epoch(msg.created_at) or 0) * 1000),
                custom_attributes=extra.custom_attributes,
                additional_attributes=extra.additional_attributes,
            )
        echo = msg.ext_ref is not None and await self._match_echo(tx, account, msg)
        ours = echo or (who.kind is cv.SenderKind.AGENT_BOT and who.id == self.bot_id)
        inserted = await self._store_message(tx, _message_row(account, msg, who))
        conv = await self._merge_signals(tx, conv, cv.message_signals(msg, ours=ours))
        late = False
        if not inserted and cv.is_customer_turn_input(msg) and not ours:
            # Stored first by an early message_updated (which is no turn input): this
            # message_created is its first as a customer message, not a duplicate.
            late = not await tx.had_turn_input(conv.account_id, conv.conversation_id, msg.id)
        if (inserted or late) and cv.is_customer_turn_input(msg) and not ours:
            if event.answered:  # backfilled, and a reply already followed it in Chatwoot
                await tx.skip_turn_input(conv.account_id, conv.conversation_id, msg.id)
            else:
                await self._turn_input(tx, conv, msg.id)
        if not inserted and not late and event.event == "message_created":
            return "duplicate", f"message {msg.id} already stored"
        return "applied", "echo of our reply" if echo else None

    async def _store_message(self, tx: Statements, row: MessageRow) -> bool:
        """Insert once; a later event of the same message only moves it forward. The insert
        is tried first (a new message is the common case: one round trip, not two); the row it
        conflicted with is there to lock, committed (the insert waited for its writer)."""
        if await tx.insert_message(row):
            return True
        stored = await tx.lock_message(row.account_id, row.message_id)
        if stored is None:  # not expected (messages are never deleted): stored, not lost
            return await tx.insert_message(row)
        status = stored.status
        if row.direction == cv.Direction.OUTBOUND:
            current, reported = statuses.Outbound(stored.status), statuses.Outbound(row.status)
            status = statuses.advance_or_keep(current, reported)
        newer = row.version > stored.version
        await tx.update_message(msgspec.structs.replace(row, status=status), newer=newer)
        return False

    async def _match_echo(self, tx: Statements, account: int, msg: views.Message) -> bool:
        """Our own reply coming back: record Chatwoot's id and status on the outbound row.

        Only a message we could have posted (echoes.could_be_ours), in the very conversation
        the reply with that ref went to, is ours: anyone can type an `ext_ref`.
        """
        assert msg.ext_ref is not None and msg.conversation is not None
        if not echoes.could_be_ours(msg):
            return False
        reported = _embedded_status(msg) or statuses.Outbound.SENT
        row = await tx.mark_posted(
            msg.ext_ref,
            chatwoot_message_id=msg.id,
            reported=reported,
            conversation=(account, msg.conversation.id),
        )
        return row is not None

    async def _turn_input(self, tx: Statements, conv: ConversationRow, message_id: int) -> None:
        route = self.topology.route_for(
            account=conv.account_id, inbox=conv.inbox_id, channel=conv.channel
        )
        if route is None or conv.handler != cv.Handler.BOT:
            await tx.skip_turn_input(conv.account_id, conv.conversation_id, message_id)
            return
        timing = route.timing(self.topology.turns)
        await tx.schedule_turn(
            account_id=conv.account_id,
            conversation_id=conv.conversation_id,
            message_id=message_id,
            now=self.clock(),
            debounce=dt.timedelta(milliseconds=timing.debounce_ms),
            max_wait=dt.timedelta(milliseconds=timing.max_wait_ms),
            max_messages=timing.max_messages,
        )


# Events the fast path is tried on: what it can take when their conversation is stored. A
# conversation_created, a contact event or an unknown one goes to the per-entry path at once
# (no rows read in vain); the fast path takes them too when they come inside a run.
RUN_STARTS = MESSAGE_EVENTS | (CONVERSATION_EVENTS - {"conversation_created"}) | TYPING_EVENTS


def _may_run(entry: StreamEntry) -> bool:
    return entry.fields.get(b"event", b"").decode(errors="replace") in RUN_STARTS


def _keys(entries: list[StreamEntry]) -> dict[str, Any]:
    """The rows a run of `entries` may touch, for Preload.read: their stream ids, the
    conversations and the messages their bodies name (an entry that does not decode names
    none: persist's code fails it again, and it goes one by one)."""
    stream_ids: list[str] = []
    conversations: set[tuple[int, int]] = set()
    messages: set[tuple[int, int]] = set()
    for entry in entries:
        stream_ids.append(entry.id)
        try:
            event = events.decode(events.EventEntry, entry.fields)
            name = event.event
            conversation: views.Conversation | None = None
            owner: views.Ref | None = None  # whose account id persist takes (else the entry's)
            if name in MESSAGE_EVENTS:
                msg = views.message_decoder.decode(event.body)
                conversation, owner = msg.conversation, msg.account
                account = _account(owner, event)
                if account is not None and _int64(msg.id) is not None:
                    messages.add((account, msg.id))
            elif name in CONVERSATION_EVENTS or name in SNAPSHOTS:
                conversation = views.conversation_decoder.decode(event.body)
            elif name in TYPING_EVENTS:
                conversation = views.typing_decoder.decode(event.body).conversation
            if conversation is not None:
                account = _account(owner if name in MESSAGE_EVENTS else conversation.account, event)
                if account is not None and _int64(conversation.id) is not None:
                    conversations.add((account, conversation.id))
        except (EntryDecodeError, msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            continue
    return {"stream_ids": stream_ids, "conversations": conversations, "messages": messages}


def _event(entry: StreamEntry) -> events.EventEntry:
    event = events.decode(events.EventEntry, entry.fields)
    structlog.contextvars.bind_contextvars(
        delivery=events.bounded_delivery(event.delivery), webhook_event=event.event
    )
    for name, value in (("account.id", event.account), ("conversation.id", event.conversation)):
        if value is not None and _int64(value) is None:
            raise PermanentError(f"{name} {value} is outside int64")
    return event


def _persisted(outcome: Outcome | None) -> None:
    if outcome is None:
        log.info("event.skipped", reason="entry already processed")
    else:
        log.info("event.persisted", outcome=outcome[0], detail=outcome[1])


def salvage(entry: StreamEntry) -> events.EventEntry:
    """What can be kept of a dead entry for its audit row, whatever is wrong with it: fields
    that do not decode or do not fit a column are left empty; the raw body is kept as is."""
    try:
        event = events.decode(events.EventEntry, entry.fields)
    except EntryDecodeError:
        raw = {k.decode(errors="replace"): v for k, v in entry.fields.items()}
        event = events.EventEntry(
            source=_text(raw.get("source")) or "chatwoot",
            event=_text(raw.get("event")),
            delivery=_text(raw.get("delivery")),
            received_at=0,
            signed=raw.get("signed") == b"1",
            body=raw.get("body", b""),
        )
    sane = views.EPOCH_MIN * 1000 <= event.received_at <= views.EPOCH_MAX * 1000
    return msgspec.structs.replace(
        event,
        source=_text(event.source),
        event=_text(event.event),
        delivery=_text(event.delivery),
        account=_int64(event.account),
        conversation=_int64(event.conversation),
        # The stream id starts with the ms Redis stored it at: as good a receipt time.
        received_at=event.received_at if sane else int(entry.id.split("-")[0]),
    )


def _check_time(name: str, value: str | int | float | None) -> None:
    """ISO times are checked here (numeric ones by the views' bounds): a time the database
    or `datetime` cannot hold, or that cannot be right, is the payload's fault."""
    seconds = cv.epoch(value)
    if seconds is not None and not views.EPOCH_MIN <= seconds <= views.EPOCH_MAX:
        raise PermanentError(f"{name} {value!r} is outside 2000-01-01..2200-01-01")


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return (value or "").replace("\x00", "\ufffd")


def _int64(value: int | None) -> int | None:
    return value if value is not None and views.INT64_MIN <= value <= views.INT64_MAX else None


def _account(ref: views.Ref | None, event: events.EventEntry) -> int | None:
    if ref is not None and isinstance(ref.id, int):
        return ref.id
    return event.account


def _contact_version(contact: views.Contact, event: events.EventEntry) -> int:
    """Epoch ms of the contact's `updated_at` when the event says it, else when we received it."""
    for item in contact.changed_attributes or []:
        change = item.get("updated_at")
        if isinstance(change, dict):
            value = change.get("current_value")
            seconds = cv.epoch(value) if isinstance(value, str | int | float) else None
            _check_time("changed_attributes.updated_at", seconds)
            if seconds is not None:
                return int(seconds * 1000)
    return event.received_at


def _conversation_row(
    account: int, view: views.Conversation, inbox: views.InboxRef | None = None
) -> ConversationRow:
    meta = view.meta or views.Meta()
    sender = meta.sender or views.Person()
    extra = attributes.of_conversation(view, inbox)
    return ConversationRow(
        account_id=account,
        conversation_id=view.id,
        inbox_id=view.inbox_id,
        channel=view.channel,
        contact_id=sender.id,
        identity=cv.identity(view),
        status=view.status,
        assignee_type=meta.assignee_type,
        assignee_id=meta.assignee.id if meta.assignee else None,
        team_id=meta.team.id if meta.team else None,
        labels=sorted(view.labels),
        handler=cv.Handler.BOT,
        version=view.updated_at or 0.0,
        custom_attributes=extra.custom_attributes,
        additional_attributes=extra.additional_attributes,
        inbox_name=extra.inbox_name,
    )


async def _fill_inbox_name(
    tx: Statements, existing: ConversationRow, inbox: views.InboxRef | None
) -> None:
    """An older message event still gives the inbox's name when the stored (newer) snapshot
    came without one, as conversation events do: the name then does not depend on the order
    events came in. At most once per conversation."""
    name = attributes.of_conversation_inbox(inbox)
    if name is not None and existing.inbox_name is None:
        await tx.fill_inbox_name(existing.account_id, existing.conversation_id, name)


def _with_takeover(
    row: ConversationRow, takeover: cv.Takeover, signals: list[cv.Signal]
) -> ConversationRow:
    merged = takeover.merge(signals)
    return msgspec.structs.replace(
        row,
        handler=str(merged.handler),
        human_since=merged.human_since,
        bot_since=merged.bot_since,
    )


def _embedded(msg: views.Message) -> views.EmbeddedMessage | None:
    """This message as it appears in `conversation.messages[]` (where receipts show)."""
    for embedded in msg.conversation.messages if msg.conversation else []:
        if embedded.id == msg.id:
            return embedded
    return None


def _embedded_status(msg: views.Message) -> statuses.Outbound | None:
    embedded = _embedded(msg)
    return statuses.from_chatwoot(embedded.status) if embedded else None


def _message_row(account: int, msg: views.Message, who: cv.Speaker) -> MessageRow:
    assert msg.conversation is not None
    if who.direction is cv.Direction.INBOUND:
        status = str(statuses.Inbound.RECEIVED)
    else:
        status = str(_embedded_status(msg) or statuses.Outbound.SENT)
    embedded = _embedded(msg)
    version = cv.epoch(embedded.updated_at if embedded and embedded.updated_at else None)
    attributes = msg.content_attributes or {}
    return MessageRow(
        account_id=account,
        message_id=msg.id,
        conversation_id=msg.conversation.id,
        direction=who.direction,
        sender_kind=who.kind,
        sender_id=who.id,
        private=msg.private,
        message_type=str(msg.message_type) if msg.message_type is not None else None,
        # PostgreSQL text cannot hold NUL; the raw body keeps the original in webhook_events.
        content=msg.content.replace("\x00", "\ufffd") if msg.content else msg.content,
        content_type=msg.content_type,
        attachments=events.json_encoder.encode([_attachment(a) for a in msg.attachments]),
        status=status,
        created_at=_timestamp(msg.created_at),
        ext_ref=msg.ext_ref,
        deleted=bool(attributes.get("deleted")),
        version=version or cv.epoch(msg.created_at) or 0.0,
    )


def _attachment(raw: dict[str, object]) -> events.Attachment:
    try:
        return msgspec.convert(raw, events.Attachment, strict=False)
    except msgspec.ValidationError:
        # An attachment of an unexpected shape must not cost the message: keep what is sure.
        url = raw.get("data_url")
        return events.Attachment(data_url=url if isinstance(url, str) else None)


def _timestamp(value: str | int | None) -> dt.datetime | None:
    seconds = cv.epoch(value)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds is not None else None


def _from_automation(name: str) -> bool:
    """What Chatwoot posts to an automation URL (as `ingress.automation.is_automation`)."""
    return name.startswith("automation_event.") or name == "macro.executed"


def _ahead(view: views.Conversation, event: events.EventEntry) -> str | None:
    """Why a snapshot dated too far after its receive time is not applied, or None."""
    if view.updated_at is None:
        return None
    ahead = view.updated_at - event.received_at / 1000
    if ahead <= FUTURE_SLACK_S:
        return None
    return (
        f"snapshot updated_at is {ahead:.0f} s after its receive time (over {FUTURE_SLACK_S:.0f} s)"
    )
