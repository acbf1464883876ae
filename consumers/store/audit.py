"""The audit trail: every webhook entry with its outcome and raw body."""

from __future__ import annotations

import datetime as dt

from consumers.store.base import SQL
from ingress import events


class AuditSQL(SQL):
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
            # Any writer's entry (an older ingress, a replay) fits the indexed column.
            events.bounded_delivery(entry.delivery),
            dt.datetime.fromtimestamp(entry.received_at / 1000, dt.UTC),
            entry.source,
            entry.event,
            entry.account,
            entry.conversation,
            entry.signed,
            entry.body,
        )
        return bool(inserted)

    async def record_dead(self, stream_id: str, entry: events.EventEntry, detail: str) -> None:
        """The audit row of a dead-lettered entry: inserted, or the existing row marked dead
        (an entry recorded `applied` whose later work failed for good)."""
        await self.conn.execute(
            """
            INSERT INTO webhook_events (stream_id, delivery_id, received_at, source, event,
                account_id, chatwoot_conversation_id, signed, outcome, detail, body)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'dead', $9, $10)
            ON CONFLICT (stream_id) DO UPDATE SET outcome = 'dead', detail = EXCLUDED.detail,
                processed_at = now()
            """,
            stream_id,
            # Any writer's entry (an older ingress, a replay) fits the indexed column.
            events.bounded_delivery(entry.delivery),
            dt.datetime.fromtimestamp(entry.received_at / 1000, dt.UTC),
            entry.source,
            entry.event,
            entry.account,
            entry.conversation,
            entry.signed,
            detail,
            entry.body,
        )

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

    async def audited(
        self,
        *,
        since: dt.datetime,
        until: dt.datetime,
        event: str | None,
        outcome: str | None,
        limit: int,
    ) -> list[events.EventEntry]:
        """Webhooks from the audit trail, oldest first, as the entries the ingress wrote."""
        rows = await self.conn.fetch(
            """
            SELECT source, event, delivery_id AS delivery, account_id AS account,
                chatwoot_conversation_id AS conversation, signed, body,
                (extract(epoch FROM received_at) * 1000)::bigint AS received_at
            FROM webhook_events
            WHERE received_at >= $1 AND received_at < $2
                AND ($3::text IS NULL OR event = $3) AND ($4::text IS NULL OR outcome = $4)
            ORDER BY received_at, stream_id
            LIMIT $5
            """,
            since,
            until,
            event,
            outcome,
            limit,
        )
        return [events.EventEntry(**dict(r)) for r in rows]
