"""How long the pipeline's steps took, read from the rows' own times (the database's clock)
for the latency histograms."""

from __future__ import annotations

from consumers.store.base import SQL


class TimingSQL(SQL):
    async def since_stored(self, account_id: int, message_ids: list[int]) -> list[float]:
        """Seconds from each message's storing to now (this transaction's start)."""
        rows = await self.conn.fetch(
            "SELECT extract(epoch FROM now() - stored_at)::float8 AS s FROM messages "
            "WHERE account_id = $1 AND chatwoot_message_id = ANY($2::bigint[])",
            account_id,
            message_ids,
        )
        return [float(r["s"]) for r in rows]

    async def queued_to_sent(self, ref: str) -> float | None:
        """Seconds from a reply's queueing (its row's creation) to its posting, once sent."""
        value = await self.conn.fetchval(
            "SELECT extract(epoch FROM sent_at - created_at)::float8 FROM outbound "
            "WHERE ref = $1 AND sent_at IS NOT NULL",
            ref,
        )
        return float(value) if value is not None else None
