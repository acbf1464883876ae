"""The set-based fast path of persist: a run of entries applied to rows held in memory, then
written with one statement per table.

`Buffered` offers the statements persist runs for an entry (the same names and arguments as
`Tx`) over rows read and locked beforehand (`Preload`), so that persist's own code decides
every entry exactly as on the per-entry path; `flush` then writes what the run changed:
`INSERT ... SELECT FROM unnest(...)` for audit rows, messages and contacts, one `UPDATE ...
FROM unnest(...)` each for stored messages and conversations, one NOTIFY. A statement the
buffer cannot answer from the preloaded rows (a new conversation and its one-active rule, an
echo's outbound row, a resumed turn) raises `Unhandled`: that entry takes the per-entry path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec

from consumers import conversation as cv
from consumers.store import bulk
from consumers.store.base import Connection
from consumers.store.conversations import with_signals
from consumers.store.rows import ConversationRow, MessageRow, StoredMessage
from ingress import events

Key = tuple[int, int]  # (account, Chatwoot id)


class Unhandled(Exception):
    """The fast path cannot prove it would do what the per-entry path does: take that one."""


class Turn(msgspec.Struct, kw_only=True):
    """A conversation's turn bookkeeping, as schedule_turn and skip_turn_input move it."""

    last_inbound_message_id: int
    emitted_through: int
    answered_through: int
    pending_count: int
    burst_started_at: dt.datetime | None
    turn_due_at: dt.datetime | None


class Preload(msgspec.Struct, kw_only=True):
    """What a run starts from, read (and locked) in its transaction."""

    processed: frozenset[str]  # stream ids already in the audit trail
    asked: frozenset[Key]  # the conversations read (found or not)
    conversations: dict[Key, tuple[ConversationRow, Turn]]
    messages_asked: frozenset[Key]
    messages: dict[Key, StoredMessage]

    @classmethod
    async def read(
        cls,
        conn: Connection,
        *,
        stream_ids: list[str],
        conversations: set[Key],
        messages: set[Key],
    ) -> Preload:
        """One statement: the stream ids already processed, the conversations and the stored
        messages named, their rows locked."""
        found = await bulk.read(
            conn,
            stream_ids=stream_ids,
            conversations=sorted(conversations),
            messages=sorted(messages),
        )
        names = [name for name, _ in bulk.CONVERSATION_COLUMNS]
        turns = [name for name, _ in bulk.TURN_COLUMNS]
        loaded: dict[Key, tuple[ConversationRow, Turn]] = {}
        for account, conversation, *values in found.conversations:
            row = dict(zip(names, values[: len(names)], strict=True))
            turn = dict(zip(turns, values[len(names) :], strict=True))
            loaded[(account, conversation)] = (
                msgspec.convert(
                    {"account_id": account, "conversation_id": conversation, **row},
                    ConversationRow,
                ),
                msgspec.convert(turn, Turn),
            )
        return cls(
            processed=frozenset(found.processed),
            asked=frozenset(conversations),
            conversations=loaded,
            messages_asked=frozenset(messages),
            messages={
                (account, message): StoredMessage(status=status, version=version)
                for account, message, status, version in found.messages
            },
        )


@dataclass
class _Conversation:
    row: ConversationRow
    turn: Turn
    clear_answer: bool = False  # a human took it: no bot answer awaited (as set_takeover)
    dirty: bool = False


@dataclass
class _MessageUpdate:
    """The updates of a stored message, folded: the last status, the newest content."""

    stored: StoredMessage
    newer: MessageRow | None = None
    deleted: bool = False


@dataclass
class _Audit:
    stream_id: str
    entry: events.EventEntry
    outcome: str = "applied"
    detail: str | None = None


@dataclass
class Buffered:
    """Persist's statements over preloaded rows; `flush` writes the result."""

    preload: Preload
    audit: dict[str, _Audit] = field(default_factory=dict)
    conversations: dict[Key, _Conversation] = field(default_factory=dict)
    contacts: dict[Key, dict[str, Any]] = field(default_factory=dict)
    inserted: dict[Key, MessageRow] = field(default_factory=dict)
    updated: dict[Key, _MessageUpdate] = field(default_factory=dict)
    notify: bool = False

    # -- the audit trail (AuditSQL)

    async def record_event(self, stream_id: str, entry: events.EventEntry) -> bool:
        if stream_id in self.preload.processed or stream_id in self.audit:
            return False
        self.audit[stream_id] = _Audit(stream_id, entry)
        return True

    async def set_outcome(self, stream_id: str, outcome: str, detail: str | None = None) -> None:
        audit = self.audit[stream_id]
        audit.outcome, audit.detail = outcome, detail

    # -- contacts and conversations (ConversationSQL)

    async def upsert_contact(
        self,
        *,
        account_id: int,
        contact_id: int,
        name: str | None,
        email: str | None,
        phone: str | None,
        identifier: str | None,
        version: int,
        custom_attributes: str | None = None,
        additional_attributes: str | None = None,
    ) -> None:
        # Applied one after another with `WHERE version <= EXCLUDED.version`, the rows of a run
        # leave the last of the newest: that one alone, with the same guard, leaves the same.
        # Attributes left out (None) keep the stored ones, which this run did not read: the
        # per-entry statement's COALESCE decides those.
        if custom_attributes is None or additional_attributes is None:
            raise Unhandled("a contact without its attributes")
        key = (account_id, contact_id)
        kept = self.contacts.get(key)
        if kept is None or kept["version"] <= version:
            self.contacts[key] = {
                "name": name,
                "email": email,
                "phone": phone,
                "identifier": identifier,
                "version": version,
                "custom_attributes": custom_attributes,
                "additional_attributes": additional_attributes,
            }

    async def lock_conversation(
        self, account_id: int, conversation_id: int
    ) -> ConversationRow | None:
        conv = self._conversation((account_id, conversation_id))
        return None if conv is None else conv.row

    async def insert_conversation(self, row: ConversationRow) -> bool:
        raise Unhandled("a new conversation (the one-active rule reads other rows)")

    async def update_conversation(self, row: ConversationRow) -> None:
        conv = self._known((row.account_id, row.conversation_id))
        old = conv.row
        conv.row = msgspec.structs.replace(
            row,
            # As update_conversation's COALESCEs: a snapshot without them keeps what is known;
            # the identity a conversation was first seen with stays.
            inbox_id=_first(row.inbox_id, old.inbox_id),
            channel=_first(row.channel, old.channel),
            contact_id=_first(row.contact_id, old.contact_id),
            identity=_first(old.identity, row.identity),
            handler=cv.Handler(row.handler),
            # As update_conversation's COALESCE(new, old): a snapshot without them erases none.
            custom_attributes=_first(row.custom_attributes, old.custom_attributes),
            additional_attributes=_first(row.additional_attributes, old.additional_attributes),
            inbox_name=_first(row.inbox_name, old.inbox_name),
        )
        conv.clear_answer |= row.handler == cv.Handler.HUMAN
        conv.dirty = True

    async def fill_inbox_name(self, account_id: int, conversation_id: int, name: str) -> None:
        conv = self._known((account_id, conversation_id))
        if conv.row.inbox_name is None:  # as the statement's `WHERE inbox_name IS NULL`
            conv.row = msgspec.structs.replace(conv.row, inbox_name=name)
            conv.dirty = True

    async def merge_signals(
        self, conv: ConversationRow, signals: list[cv.Signal]
    ) -> ConversationRow:
        row = with_signals(conv, signals)
        if row != conv:
            await self.set_takeover(
                conv.account_id,
                conv.conversation_id,
                handler=row.handler,
                human_since=row.human_since,
                bot_since=row.bot_since,
            )
        return row

    async def set_takeover(
        self,
        account_id: int,
        conversation_id: int,
        *,
        handler: cv.Handler,
        human_since: float | None,
        bot_since: float | None,
    ) -> None:
        conv = self._known((account_id, conversation_id))
        conv.row = msgspec.structs.replace(
            conv.row, handler=cv.Handler(handler), human_since=human_since, bot_since=bot_since
        )
        conv.clear_answer |= handler == cv.Handler.HUMAN
        conv.dirty = True

    # -- messages (MessageSQL)

    async def insert_message(self, row: MessageRow) -> bool:
        key = (row.account_id, row.message_id)
        if key not in self.preload.messages_asked:
            raise Unhandled("a message the run did not read")
        if key in self.preload.messages or key in self.inserted:
            return False
        self.inserted[key] = row
        return True

    async def lock_message(self, account_id: int, message_id: int) -> StoredMessage | None:
        key = (account_id, message_id)
        if key in self.inserted:
            row = self.inserted[key]
            return StoredMessage(status=row.status, version=row.version)
        if key in self.updated:
            return self.updated[key].stored
        return self.preload.messages.get(key)

    async def update_message(self, row: MessageRow, *, newer: bool) -> None:
        """As MessageSQL.update_message: the status always, the content when newer, `deleted`
        once set stays, the version only grows."""
        key = (row.account_id, row.message_id)
        if key in self.inserted:
            old = self.inserted[key]
            content = row if newer else old
            self.inserted[key] = msgspec.structs.replace(
                old,
                content=content.content,
                content_type=content.content_type,
                attachments=content.attachments,
                status=row.status,
                deleted=old.deleted or row.deleted,
                version=max(old.version, row.version),
            )
            return
        stored = self.preload.messages[key]
        update = self.updated.setdefault(key, _MessageUpdate(stored))
        update.stored = StoredMessage(
            status=row.status, version=max(update.stored.version, row.version)
        )
        update.newer = row if newer else update.newer
        update.deleted |= row.deleted

    async def resume_skipped(
        self, account_id: int, conversation_id: int, since: float
    ) -> int | None:
        raise Unhandled("back to the bot: skipped messages are read again")

    async def mark_posted(self, ref: str, **_: object) -> None:
        raise Unhandled("an echo of our reply: its outbound row")

    # -- turn bookkeeping (TurnSQL)

    async def had_turn_input(self, account_id: int, conversation_id: int, message_id: int) -> bool:
        conv = self._conversation((account_id, conversation_id))
        return conv is not None and conv.turn.last_inbound_message_id >= message_id

    async def skip_turn_input(self, account_id: int, conversation_id: int, message_id: int) -> None:
        conv = self._known((account_id, conversation_id))
        turn = conv.turn
        conv.turn = msgspec.structs.replace(
            turn,
            last_inbound_message_id=max(turn.last_inbound_message_id, message_id),
            emitted_through=max(turn.emitted_through, message_id),
            answered_through=max(turn.answered_through, message_id),
        )
        conv.dirty = True

    async def schedule_turn(
        self,
        *,
        account_id: int,
        conversation_id: int,
        message_id: int,
        now: dt.datetime,
        debounce: dt.timedelta,
        max_wait: dt.timedelta,
        max_messages: int,
    ) -> None:
        """As TurnSQL.schedule_turn, the same expressions over the old values."""
        conv = self._known((account_id, conversation_id))
        turn = conv.turn
        if not message_id > turn.emitted_through:
            return
        burst = turn.burst_started_at
        if turn.pending_count + 1 >= max_messages:
            due = now
        else:
            due = min(now + debounce, (burst if burst is not None else now) + max_wait)
        conv.turn = msgspec.structs.replace(
            turn,
            last_inbound_message_id=max(turn.last_inbound_message_id, message_id),
            pending_count=turn.pending_count + 1,
            burst_started_at=burst if burst is not None else now,
            turn_due_at=due,
        )
        conv.dirty = True
        self.notify |= due <= now or conv.turn.pending_count == 1

    # -- state

    def _conversation(self, key: Key) -> _Conversation | None:
        if key not in self.preload.asked:
            raise Unhandled("a conversation the run did not read")
        if key not in self.conversations:
            found = self.preload.conversations.get(key)
            if found is None:
                return None
            self.conversations[key] = _Conversation(row=found[0], turn=found[1])
        return self.conversations[key]

    def _known(self, key: Key) -> _Conversation:
        conv = self._conversation(key)
        if conv is None:  # not expected: persist locks (or inserts) before it updates
            raise Unhandled("a conversation that is not stored")
        return conv

    # -- writing

    async def flush(self, conn: Connection) -> None:
        """Everything the run changed, in one statement; raises Unhandled when the rows are
        not as read (another consumer stored one of these entries or messages meanwhile), and
        the caller rolls the run back and takes its entries one by one."""
        dirty = sorted((key, conv) for key, conv in self.conversations.items() if conv.dirty)
        written = await bulk.write(
            conn,
            audit=[_audit_values(a) for a in self.audit.values()],
            contacts=[
                (*key, *(kept[name] for name, _ in bulk.CONTACT_COLUMNS))
                for key, kept in sorted(self.contacts.items())
            ],
            messages=[
                tuple(getattr(row, name) for name, _ in bulk.MESSAGE_COLUMNS)
                for row in self.inserted.values()
            ],
            updates=[_update_values(key, u) for key, u in sorted(self.updated.items())],
            conversations=[_conversation_values(conv) for _, conv in dirty],
            notify=self.notify,
        )
        if written.audit != len(self.audit):
            raise Unhandled("an entry was recorded meanwhile")
        if written.messages != len(self.inserted):
            raise Unhandled("a message was stored meanwhile")


def _first(a: object, b: object) -> object:
    return a if a is not None else b


def _audit_values(a: _Audit) -> bulk.Values:
    return (
        a.stream_id,
        # Any writer's entry (an older ingress, a replay) fits the indexed column.
        events.bounded_delivery(a.entry.delivery),
        dt.datetime.fromtimestamp(a.entry.received_at / 1000, dt.UTC),
        a.entry.source,
        a.entry.event,
        a.entry.account,
        a.entry.conversation,
        a.entry.signed,
        a.outcome,
        a.detail,
        a.entry.body,
    )


def _update_values(key: Key, update: _MessageUpdate) -> bulk.Values:
    newer = update.newer
    return (
        *key,
        update.stored.status,
        newer is not None,
        newer.content if newer else None,
        newer.content_type if newer else None,
        newer.attachments if newer else None,
        update.deleted,
        update.stored.version,
    )


def _conversation_values(conv: _Conversation) -> bulk.Values:
    return (
        conv.row.account_id,
        conv.row.conversation_id,
        *(getattr(conv.row, name) for name, _ in bulk.CONVERSATION_COLUMNS),
        *(getattr(conv.turn, name) for name, _ in bulk.TURN_COLUMNS),
        conv.clear_answer,
    )
