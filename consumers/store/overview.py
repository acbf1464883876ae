"""The ops app's read-only queries over many conversations: recent webhooks, conversation
search, message counts per hour, webhooks per minute, reply latency."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from consumers.store.base import SQL


class WebhookFilter(msgspec.Struct, frozen=True, kw_only=True):
    outcome: str | None = None
    event: str | None = None
    since: dt.datetime | None = None
    limit: int = 100


class ConversationFilter(msgspec.Struct, frozen=True, kw_only=True):
    account: int | None = None
    inbox: int | None = None
    status: str | None = None
    handler: str | None = None
    search: str | None = None  # contact name, email, phone or identifier (substring)
    limit: int = 100


class OverviewSQL(SQL):
    async def webhooks(self, chosen: WebhookFilter) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            """
            SELECT stream_id, delivery_id, received_at, source, event, account_id,
                chatwoot_conversation_id, outcome, detail
            FROM webhook_events
            WHERE ($1::text IS NULL OR outcome = $1) AND ($2::text IS NULL OR event = $2)
                AND ($3::timestamptz IS NULL OR received_at >= $3)
            ORDER BY received_at DESC, stream_id DESC LIMIT $4
            """,
            chosen.outcome,
            chosen.event,
            chosen.since,
            chosen.limit,
        )
        return [dict(r) for r in rows]

    async def conversations(self, chosen: ConversationFilter) -> list[dict[str, Any]]:
        # The search is a substring, its LIKE wildcards taken literally.
        pattern = None
        if chosen.search:
            escaped = chosen.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        rows = await self.conn.fetch(
            """
            SELECT c.account_id, c.chatwoot_conversation_id, c.inbox_id, c.channel, c.status,
                c.handler, c.assignee_type, c.assignee_id, c.active, c.started_at,
                to_timestamp(NULLIF(c.version, 0)) AS updated_at,
                k.name AS contact_name, k.email AS contact_email, k.phone AS contact_phone,
                k.identifier AS contact_identifier
            FROM conversations c LEFT JOIN contacts k
                ON k.account_id = c.account_id AND k.chatwoot_contact_id = c.contact_id
            WHERE ($1::bigint IS NULL OR c.account_id = $1)
                AND ($2::bigint IS NULL OR c.inbox_id = $2)
                AND ($3::text IS NULL OR c.status = $3)
                AND ($4::text IS NULL OR c.handler = $4)
                AND ($5::text IS NULL OR k.name ILIKE $5 OR k.email ILIKE $5
                     OR k.phone ILIKE $5 OR k.identifier ILIKE $5)
            ORDER BY c.version DESC, c.started_at DESC LIMIT $6
            """,
            chosen.account,
            chosen.inbox,
            chosen.status,
            chosen.handler,
            pattern,
            chosen.limit,
        )
        return [dict(r) for r in rows]

    async def messages_per_hour(self, now: dt.datetime, hours: int) -> list[dict[str, Any]]:
        """Messages created per hour and direction over the last `hours` hours."""
        rows = await self.conn.fetch(
            """
            SELECT date_trunc('hour', created_at) AS hour, direction, count(*) AS messages
            FROM messages WHERE created_at >= $1::timestamptz - make_interval(hours => $2::int)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            now,
            hours,
        )
        return [dict(r) for r in rows]

    async def webhooks_per_minute(self, now: dt.datetime, minutes: int) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            """
            SELECT date_trunc('minute', received_at) AS minute, outcome, count(*) AS webhooks
            FROM webhook_events
            WHERE received_at >= $1::timestamptz - make_interval(mins => $2::int)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            now,
            minutes,
        )
        return [dict(r) for r in rows]

    async def reply_latency(self, now: dt.datetime, minutes: int) -> dict[str, Any]:
        """Queued → posted of the replies posted in the last `minutes` minutes (seconds)."""
        row = await self.conn.fetchrow(
            """
            SELECT count(*) AS replies,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS p50_s,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds) AS p95_s,
                max(seconds) AS max_s
            FROM (SELECT extract(epoch FROM sent_at - created_at)::float8 AS seconds
                  FROM outbound
                  WHERE sent_at >= $1::timestamptz - make_interval(mins => $2::int)) posted
            """,
            now,
            minutes,
        )
        return dict(row) if row is not None else {"replies": 0}
