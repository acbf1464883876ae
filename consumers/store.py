"""All SQL, and the only module that imports asyncpg.

Every write is an upsert guarded by Chatwoot's own versions, so applying the same events in
any order, any number of times, converges on the same rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import msgspec

from consumers import conversation as cv
from consumers import statuses
from consumers.errors import StoreError
from ingress import events

UTC = dt.UTC


class ConversationRow(msgspec.Struct, kw_only=True):
    account_id: int
    conversation_id: int
    inbox_id: int | None
    channel: str | None
    contact_id: int | None
    identity: str | None
    status: str | None
    assignee_type: str | None
    assignee_id: int | None
    team_id: int | None = None
    labels: list[str] = []
    handler: str
    human_since: float | None = None
    bot_since: float | None = None
    version: float


class MessageRow(msgspec.Struct, kw_only=True):
    account_id: int
    message_id: int
    conversation_id: int
    direction: str
    sender_kind: str
    sender_id: int | None
    private: bool
    message_type: str | None
    content: str | None
    content_type: str | None
    attachments: bytes  # JSON
    status: str
    created_at: dt.datetime | None
    ext_ref: str | None
    deleted: bool = False
    version: float = 0.0


class StoredMessage(msgspec.Struct, kw_only=True):
    status: str
    version: float


class DueTurn(msgspec.Struct, kw_only=True):
    account_id: int
    conversation_id: int
    inbox_id: int | None
    channel: str | None
    contact_id: int | None
    handler: str
    emitted_through: int
    answered_through: int
    last_inbound_message_id: int


class ReplyContext(msgspec.Struct, kw_only=True):
    """What the deliverer gates a reply on."""

    inbox_id: int | None
    channel: str | None
    status: str | None
    handler: str
    last_inbound_message_id: int


class OutboundRow(msgspec.Struct, kw_only=True):
    ref: str
    account_id: int
    kind: str
    turn: str | None
    status: str
    attempts: int
    chatwoot_message_id: int | None
    chatwoot_conversation_id: int | None
    next_attempt_at: dt.datetime | None
    known_through: int | None


_OUTBOUND_COLUMNS = (
    "ref, account_id, kind, turn, status, attempts, chatwoot_message_id, "
    "chatwoot_conversation_id, next_attempt_at, known_through"
)


_OUTAGES = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


def _translate(exc: BaseException) -> StoreError:
    # Connection trouble and serialization conflicts pass; bad data does not.
    outage = isinstance(exc, _OUTAGES)
    retryable = outage or isinstance(
        exc,
        OSError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.SerializationError
        # Two consumers racing to insert the same row: the retry takes the update path.
        | asyncpg.exceptions.UniqueViolationError
        | asyncpg.exceptions.DeadlockDetectedError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | TimeoutError,
    )
    return StoreError(f"{type(exc).__name__}: {exc}", retryable=retryable, outage=outage)


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class Store:
    """A pool of PostgreSQL connections."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Store:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc
        return cls(pool)

    @staticmethod
    async def ensure_database(admin_dsn: str, name: str) -> None:
        """CREATE DATABASE unless it exists (the embedded server starts with `postgres` only)."""
        try:
            conn = await asyncpg.connect(admin_dsn)
            try:
                exists = await conn.fetchval(
                    "SELECT true FROM pg_database WHERE datname = $1", name
                )
                if not exists:
                    await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
        except asyncpg.DuplicateDatabaseError:
            pass  # created concurrently: what we wanted
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        await self.pool.close()

    async def apply_schema(self, sql: str) -> None:
        # Concurrent `IF NOT EXISTS` DDL can still collide: one applier at a time.
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(727001)")
                await conn.execute(sql)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    async def schema_version(self) -> int | None:
        try:
            value = await self.pool.fetchval("SELECT max(version) FROM schema_version")
        except asyncpg.UndefinedTableError:
            return None
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc
        return int(value) if value is not None else None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield Tx(conn)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc


class Tx:
    """The statements Switchboard runs, all inside one transaction."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
        self.conn = conn

    # -- the audit trail ---------------------------------------------------------------------

    async def record_event(self, stream_id: str, entry: events.EventEntry) -> bool:
        """Record a webhook entry; False when this stream entry was already processed."""
        inserted = await self.conn.fetchval(
            """
            INSERT INTO webhook_events (stream_id, delivery_id, received_at, source, event,
                account_id, chatwoot_conversation_id, signed, outcome, body)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'applied', $9)
            ON CONFLICT (stream_id) DO NOTHING
            RETURNING true
            """,
            stream_id,
            entry.delivery,
            dt.datetime.fromtimestamp(entry.received_at / 1000, UTC),
            entry.source,
            entry.event,
            entry.account,
            entry.conversation,
            entry.signed,
            entry.body,
        )
        return bool(inserted)

    async def set_outcome(self, stream_id: str, outcome: str, detail: str | None = None) -> None:
        await self.conn.execute(
            "UPDATE webhook_events SET outcome = $2, detail = $3 WHERE stream_id = $1",
            stream_id,
            outcome,
            detail,
        )

    async def expire_audit(self, before: dt.datetime, batch: int = 10_000) -> int:
        """Delete audit rows received before `before`, a batch at a time (short locks)."""
        status = await self.conn.execute(
            """
            DELETE FROM webhook_events WHERE stream_id IN (
                SELECT stream_id FROM webhook_events WHERE received_at < $1 LIMIT $2)
            """,
            before,
            batch,
        )
        return int(status.split()[-1])

    # -- contacts and conversations ------------------------------------------------------------

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
    ) -> None:
        await self.conn.execute(
            """
            INSERT INTO contacts (account_id, chatwoot_contact_id, name, email, phone,
                identifier, version)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (account_id, chatwoot_contact_id) DO UPDATE SET
                name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                identifier = EXCLUDED.identifier, version = EXCLUDED.version, updated_at = now()
            WHERE contacts.version <= EXCLUDED.version
            """,
            account_id,
            contact_id,
            name,
            email,
            phone,
            identifier,
            version,
        )

    async def lock_conversation(
        self, account_id: int, conversation_id: int
    ) -> ConversationRow | None:
        row = await self.conn.fetchrow(
            """
            SELECT account_id, chatwoot_conversation_id AS conversation_id, inbox_id, channel,
                contact_id, identity, status, assignee_type, assignee_id, team_id, labels,
                handler, human_since, bot_since, version
            FROM conversations WHERE account_id = $1 AND chatwoot_conversation_id = $2
            FOR UPDATE
            """,
            account_id,
            conversation_id,
        )
        return None if row is None else msgspec.convert(dict(row), ConversationRow)

    async def insert_conversation(self, row: ConversationRow) -> bool:
        """A conversation seen for the first time; it is the customer's active one unless a
        newer conversation (a higher display id) of the same identity already is."""
        newer = False
        if row.identity is not None:
            newer = bool(
                await self.conn.fetchval(
                    """
                    SELECT true FROM conversations
                    WHERE account_id = $1 AND channel IS NOT DISTINCT FROM $2 AND identity = $3
                        AND active AND chatwoot_conversation_id > $4
                    FOR UPDATE
                    """,
                    row.account_id,
                    row.channel,
                    row.identity,
                    row.conversation_id,
                )
            )
            if not newer:
                await self.conn.execute(
                    """
                    UPDATE conversations SET active = false, ended_at = now()
                    WHERE account_id = $1 AND channel IS NOT DISTINCT FROM $2 AND identity = $3
                        AND active AND chatwoot_conversation_id < $4
                    """,
                    row.account_id,
                    row.channel,
                    row.identity,
                    row.conversation_id,
                )
        inserted = await self.conn.fetchval(
            """
            INSERT INTO conversations (account_id, chatwoot_conversation_id, inbox_id, channel,
                contact_id, identity, status, assignee_type, assignee_id, handler, version,
                active, ended_at, team_id, labels, human_since, bot_since)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                CASE WHEN $12 THEN NULL ELSE now() END, $13, $14, $15, $16)
            ON CONFLICT (account_id, chatwoot_conversation_id) DO NOTHING
            RETURNING true
            """,
            row.account_id,
            row.conversation_id,
            row.inbox_id,
            row.channel,
            row.contact_id,
            row.identity,
            row.status,
            row.assignee_type,
            row.assignee_id,
            row.handler,
            row.version,
            not newer,
            row.team_id,
            row.labels,
            row.human_since,
            row.bot_since,
        )
        return bool(inserted)

    async def update_conversation(self, row: ConversationRow) -> None:
        await self.conn.execute(
            """
            UPDATE conversations SET inbox_id = COALESCE($3, inbox_id),
                channel = COALESCE($4, channel), contact_id = COALESCE($5, contact_id),
                identity = COALESCE(identity, $6), status = $7, assignee_type = $8,
                assignee_id = $9, handler = $10, version = $11, team_id = $12, labels = $13,
                human_since = $14, bot_since = $15
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            row.account_id,
            row.conversation_id,
            row.inbox_id,
            row.channel,
            row.contact_id,
            row.identity,
            row.status,
            row.assignee_type,
            row.assignee_id,
            row.handler,
            row.version,
            row.team_id,
            row.labels,
            row.human_since,
            row.bot_since,
        )

    async def merge_signals(
        self, conv: ConversationRow, signals: list[cv.Signal]
    ) -> ConversationRow:
        """Fold hand-off signals into a (locked) conversation; the row as it now is."""
        takeover = cv.Takeover(human_since=conv.human_since, bot_since=conv.bot_since)
        merged = takeover.merge(signals)
        row = msgspec.structs.replace(
            conv,
            handler=str(merged.handler),
            human_since=merged.human_since,
            bot_since=merged.bot_since,
        )
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
        handler: str,
        human_since: float | None,
        bot_since: float | None,
    ) -> None:
        await self.conn.execute(
            """
            UPDATE conversations SET handler = $3, human_since = $4, bot_since = $5
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            handler,
            human_since,
            bot_since,
        )

    # -- messages -----------------------------------------------------------------------------

    async def insert_message(self, row: MessageRow) -> bool:
        """Store a message once; False when Chatwoot's message id was already stored."""
        inserted = await self.conn.fetchval(
            """
            INSERT INTO messages (account_id, chatwoot_message_id, chatwoot_conversation_id,
                direction, sender_kind, sender_id, private, message_type, content, content_type,
                attachments, status, created_at, ext_ref, deleted, version)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16)
            ON CONFLICT (account_id, chatwoot_message_id) DO NOTHING
            RETURNING true
            """,
            row.account_id,
            row.message_id,
            row.conversation_id,
            row.direction,
            row.sender_kind,
            row.sender_id,
            row.private,
            row.message_type,
            row.content,
            row.content_type,
            row.attachments.decode(),
            row.status,
            row.created_at,
            row.ext_ref,
            row.deleted,
            row.version,
        )
        return bool(inserted)

    async def lock_message(self, account_id: int, message_id: int) -> StoredMessage | None:
        row = await self.conn.fetchrow(
            "SELECT status, version FROM messages "
            "WHERE account_id = $1 AND chatwoot_message_id = $2 FOR UPDATE",
            account_id,
            message_id,
        )
        return None if row is None else msgspec.convert(dict(row), StoredMessage)

    async def update_message(self, row: MessageRow, *, newer: bool) -> None:
        """An edit, deletion or receipt: the status always (the caller moved it forward only),
        the content only from a newer version of the message."""
        await self.conn.execute(
            """
            UPDATE messages SET status = $3,
                content = CASE WHEN $8 THEN $4 ELSE content END,
                content_type = CASE WHEN $8 THEN $5 ELSE content_type END,
                attachments = CASE WHEN $8 THEN $6::jsonb ELSE attachments END,
                deleted = deleted OR $7,
                version = GREATEST(version, $9)
            WHERE account_id = $1 AND chatwoot_message_id = $2
            """,
            row.account_id,
            row.message_id,
            row.status,
            row.content,
            row.content_type,
            row.attachments.decode(),
            row.deleted,
            newer,
            row.version,
        )

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
        """A customer message asks for a turn: due after `debounce` of quiet, within `max_wait`
        of the burst's first message, at once when the burst holds `max_messages`. Durable:
        the worker that emits it may be another process, after a restart."""
        await self.conn.execute(
            """
            UPDATE conversations SET
                last_inbound_message_id = GREATEST(last_inbound_message_id, $3),
                pending_count = pending_count + 1,
                burst_started_at = COALESCE(burst_started_at, $4),
                turn_due_at = CASE WHEN pending_count + 1 >= $7 THEN $4 ELSE LEAST(
                    $4 + $5::interval, COALESCE(burst_started_at, $4) + $6::interval
                ) END
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND $3 > emitted_through
            """,
            account_id,
            conversation_id,
            message_id,
            now,
            debounce,
            max_wait,
            max_messages,
        )

    async def skip_turn_input(self, account_id: int, conversation_id: int, message_id: int) -> None:
        """A customer message nobody asks the bot to answer (a human handles the conversation,
        or no route covers it): later turns start after it."""
        await self.conn.execute(
            """
            UPDATE conversations SET
                last_inbound_message_id = GREATEST(last_inbound_message_id, $3),
                emitted_through = GREATEST(emitted_through, $3),
                answered_through = GREATEST(answered_through, $3)
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            message_id,
        )

    # -- turns --------------------------------------------------------------------------------

    async def due_turns(self, now: dt.datetime, limit: int) -> list[DueTurn]:
        """Lock the conversations whose turn is due; other workers skip them (SKIP LOCKED)."""
        rows = await self.conn.fetch(
            """
            SELECT account_id, chatwoot_conversation_id AS conversation_id, inbox_id, channel,
                contact_id, handler, emitted_through, answered_through, last_inbound_message_id
            FROM conversations
            WHERE turn_due_at IS NOT NULL AND turn_due_at <= $1
            ORDER BY turn_due_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [msgspec.convert(dict(r), DueTurn) for r in rows]

    async def turn_messages(self, turn: DueTurn) -> list[events.TurnMessage]:
        """Every customer message not yet answered: a turn whose reply was dropped as
        superseded is carried whole into the next one."""
        rows = await self.conn.fetch(
            """
            SELECT chatwoot_message_id AS id, content, attachments::text AS attachments,
                created_at
            FROM messages
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
                AND chatwoot_message_id > $3 AND chatwoot_message_id <= $4
                AND direction = 'inbound' AND sender_kind = 'contact' AND NOT private
            ORDER BY chatwoot_message_id
            """,
            turn.account_id,
            turn.conversation_id,
            turn.answered_through,
            turn.last_inbound_message_id,
        )
        return [
            events.TurnMessage(
                id=r["id"],
                content=r["content"],
                attachments=msgspec.json.decode(r["attachments"], type=list[events.Attachment]),
                created_at=r["created_at"].isoformat() if r["created_at"] else "",
            )
            for r in rows
        ]

    async def mark_emitted(self, turn: DueTurn) -> None:
        await self.conn.execute(
            """
            UPDATE conversations SET emitted_through = GREATEST(emitted_through, $3),
                turn_due_at = NULL, burst_started_at = NULL, pending_count = 0
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            turn.account_id,
            turn.conversation_id,
            turn.last_inbound_message_id,
        )

    # -- outbound -----------------------------------------------------------------------------

    async def open_outbound(
        self, entry: events.OutboundEntry, *, ref: str, stream_id: str
    ) -> OutboundRow:
        """Record a reply by its ref (once, before any attempt) and lock it."""
        await self.conn.execute(
            """
            INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, content,
                private, content_attributes, status, turn, stream_id, inbox_id, source_id,
                contact_id, next_attempt_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, 'queued', $8, $9, $10, $11, $12, now())
            ON CONFLICT (ref) DO NOTHING
            """,
            ref,
            entry.account,
            entry.conversation,
            str(entry.kind),
            entry.content,
            entry.private,
            events.json_encoder.encode(entry.content_attributes).decode(),
            entry.turn,
            stream_id,
            entry.inbox,
            entry.source_id,
            entry.contact,
        )
        row = await self.lock_outbound(ref)
        assert row is not None
        return row

    async def outbound_entry(self, ref: str) -> events.OutboundEntry:
        """A recorded reply as the entry it came from (for retries, which have no entry)."""
        row = await self.conn.fetchrow(
            """
            SELECT account_id AS account, chatwoot_conversation_id AS conversation, content,
                ref, turn, kind, private, content_attributes::text AS attrs, inbox_id AS inbox,
                source_id, contact_id AS contact
            FROM outbound WHERE ref = $1
            """,
            ref,
        )
        assert row is not None
        values = dict(row)
        values["content_attributes"] = msgspec.json.decode(values.pop("attrs"))
        return msgspec.convert(values, events.OutboundEntry)

    async def due_outbound(self, now: dt.datetime, limit: int) -> list[str]:
        """Refs whose next attempt is due (a retry, or an attempt whose deliverer died)."""
        rows = await self.conn.fetch(
            """
            SELECT ref FROM outbound
            WHERE status IN ('queued', 'sending') AND next_attempt_at <= $1
            ORDER BY next_attempt_at LIMIT $2
            """,
            now,
            limit,
        )
        return [r["ref"] for r in rows]

    async def set_outbound(
        self,
        ref: str,
        *,
        status: str,
        attempts: int | None = None,
        error: str | None = None,
        chatwoot_message_id: int | None = None,
    ) -> None:
        await self.conn.execute(
            """
            UPDATE outbound SET status = $2, attempts = COALESCE($3, attempts),
                last_error = COALESCE($4, last_error),
                chatwoot_message_id = COALESCE(chatwoot_message_id, $5),
                sent_at = CASE WHEN $2 = 'sent' AND sent_at IS NULL THEN now() ELSE sent_at END,
                next_attempt_at = CASE WHEN $2 IN ('queued', 'sending')
                    THEN next_attempt_at ELSE NULL END
            WHERE ref = $1
            """,
            ref,
            status,
            attempts,
            error,
            chatwoot_message_id,
        )

    async def lock_outbound(self, ref: str) -> OutboundRow | None:
        row = await self.conn.fetchrow(
            f"SELECT {_OUTBOUND_COLUMNS} FROM outbound WHERE ref = $1 FOR UPDATE", ref
        )
        return None if row is None else msgspec.convert(dict(row), OutboundRow)

    async def mark_posted(
        self,
        ref: str,
        *,
        chatwoot_message_id: int | None,
        reported: statuses.Outbound = statuses.Outbound.SENT,
    ) -> OutboundRow | None:
        """Chatwoot has this reply (its answer, our echo, or its message list said so): move it
        forward, and mark the customer messages of its turn answered. Every path that learns
        a reply landed comes here, whichever learns it first."""
        row = await self.lock_outbound(ref)
        if row is None:
            return None
        status = statuses.advance_or_keep(statuses.Outbound(row.status), reported)
        await self.set_outbound(ref, status=status, chatwoot_message_id=chatwoot_message_id)
        through = cv.turn_through(row.turn)
        conversation = row.chatwoot_conversation_id
        if status in statuses.OUTBOUND_POSTED and through is not None and conversation:
            if row.kind == "message":
                await self.mark_answered(row.account_id, conversation, through)
        return row

    async def begin_attempt(
        self, ref: str, *, attempts: int, lease_until: dt.datetime, known_through: int
    ) -> None:
        """Mark a reply `sending` before its POST: a crash from here on is an ambiguous attempt."""
        await self.conn.execute(
            """
            UPDATE outbound SET status = 'sending', attempts = $2, next_attempt_at = $3,
                known_through = COALESCE(known_through, $4)
            WHERE ref = $1
            """,
            ref,
            attempts,
            lease_until,
            known_through,
        )

    async def hold_until(self, ref: str, until: dt.datetime, error: str | None = None) -> None:
        """No attempt before `until` (a retry's time, a rate limit, an open breaker)."""
        await self.conn.execute(
            "UPDATE outbound SET next_attempt_at = $2, last_error = COALESCE($3, last_error) "
            "WHERE ref = $1",
            ref,
            until,
            error,
        )

    async def set_conversation(self, ref: str, conversation_id: int) -> None:
        """The conversation Chatwoot created for an agent-started reply: reused on retries."""
        await self.conn.execute(
            "UPDATE outbound SET chatwoot_conversation_id = $2 WHERE ref = $1", ref, conversation_id
        )

    async def last_message_id(self, account_id: int, conversation_id: int) -> int:
        value = await self.conn.fetchval(
            "SELECT max(chatwoot_message_id) FROM messages "
            "WHERE account_id = $1 AND chatwoot_conversation_id = $2",
            account_id,
            conversation_id,
        )
        return int(value or 0)

    async def reply_context(self, account_id: int, conversation_id: int) -> ReplyContext | None:
        row = await self.conn.fetchrow(
            """
            SELECT inbox_id, channel, status, handler, last_inbound_message_id
            FROM conversations WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
        )
        return None if row is None else msgspec.convert(dict(row), ReplyContext)

    async def mark_answered(self, account_id: int, conversation_id: int, through: int) -> None:
        """A reply to a turn went out: the customer messages it covered are `read` (those a
        human handled before, behind `answered_through`, stay theirs)."""
        await self.conn.execute(
            """
            UPDATE messages SET status = 'read'
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
                AND chatwoot_message_id <= $3 AND direction = 'inbound' AND status = 'received'
                AND chatwoot_message_id > (
                    SELECT answered_through FROM conversations
                    WHERE account_id = $1 AND chatwoot_conversation_id = $2)
            """,
            account_id,
            conversation_id,
            through,
        )
        await self.conn.execute(
            """
            UPDATE conversations SET answered_through = GREATEST(answered_through, $3)
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            through,
        )

    async def echo_of(self, ref: str) -> int | None:
        """The Chatwoot id of a stored message carrying our ext_ref: proof a reply was posted."""
        value = await self.conn.fetchval(
            "SELECT chatwoot_message_id FROM messages WHERE ext_ref = $1 LIMIT 1", ref
        )
        return int(value) if value is not None else None
