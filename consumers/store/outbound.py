"""The outbox: each reply by its ref, its attempts, and what Chatwoot has of it."""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers import conversation as cv
from consumers import statuses
from consumers.store.base import SQL
from consumers.store.rows import OutboundRow
from ingress import events

_OUTBOUND_COLUMNS = (
    "ref, account_id, kind, turn, status, attempts, chatwoot_message_id, "
    "chatwoot_conversation_id, next_attempt_at, known_through"
)


class OutboundSQL(SQL):
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

    async def requeue_outbound(self, ref: str, now: dt.datetime) -> statuses.Outbound | None:
        """An operator's replay of a reply that failed for good: `queued` again with its
        attempts reset, due `now` (`last_error` stays, for history). Any other status is left
        as it is: a reply already sent, or still on its way, is never sent twice. Returns the
        status found (`sent` when its echo shows Chatwoot has it), None when no such reply."""
        row = await self.lock_outbound(ref)
        if row is None:
            return None
        found = statuses.Outbound(row.status)
        if found is not statuses.Outbound.FAILED:
            return found
        # Failed after ambiguous attempts, yet it landed (its echo came back): leave it failed.
        if await self.conn.fetchval("SELECT true FROM messages WHERE ext_ref = $1 LIMIT 1", ref):
            return statuses.Outbound.SENT
        await self.conn.execute(
            "UPDATE outbound SET status = $2, attempts = 0, next_attempt_at = $3 WHERE ref = $1",
            ref,
            str(statuses.requeue(found)),
            now,
        )
        return found
