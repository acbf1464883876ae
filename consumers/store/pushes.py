"""Pushes of turns to worker apps: one row per (turn, app), claimed when due with a lease,
and the audit trail of their attempts. Use as `PushSQL(tx.conn)` inside a transaction."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence

import msgspec

from consumers.store.base import SQL


class Push(enum.StrEnum):
    QUEUED = "queued"
    PUSHING = "pushing"
    ANSWERED = "answered"
    FAILED = "failed"
    SUPERSEDED = "superseded"


OPEN = frozenset({Push.QUEUED, Push.PUSHING})


class NewPush(msgspec.Struct, frozen=True, kw_only=True):
    turn: str
    app: str
    account_id: int
    conversation_id: int
    through: int
    stream: str
    stream_id: str
    body: bytes


class ClaimedPush(msgspec.Struct, frozen=True, kw_only=True):
    """A push leased for one attempt: everything the attempt needs, app included."""

    turn: str
    app: str
    account_id: int
    conversation_id: int
    through: int
    stream: str
    stream_id: str
    body: bytes
    attempt: int
    url: str
    secret: str
    timeout_s: float


class PushSQL(SQL):
    async def open_push(self, push: NewPush, *, now: dt.datetime) -> bool:
        """Record a push, due `now`; False when this turn was recorded for the app already."""
        added = await self.conn.fetchval(
            """
            INSERT INTO pushes (turn, app, account_id, chatwoot_conversation_id, through,
                stream, stream_id, body, next_attempt_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (turn, app) DO NOTHING RETURNING true
            """,
            push.turn, push.app, push.account_id, push.conversation_id, push.through,
            push.stream, push.stream_id, push.body, now,
        )  # fmt: skip
        return bool(added)

    async def supersede_pushes(self, now: dt.datetime) -> int:
        """Due pushes whose conversation has had a newer turn since: never pushed."""
        done = await self.conn.execute(
            """
            UPDATE pushes p SET status = 'superseded', next_attempt_at = NULL, updated_at = $1
            FROM conversations c
            WHERE p.status IN ('queued', 'pushing') AND p.next_attempt_at <= $1
                AND c.account_id = p.account_id
                AND c.chatwoot_conversation_id = p.chatwoot_conversation_id
                AND c.emitted_through > p.through
            """,
            now,
        )
        return int(done.split()[-1])

    async def claim_pushes(
        self,
        now: dt.datetime,
        *,
        limit: int,
        skip_apps: Sequence[str],
        lease_margin_s: float,
    ) -> list[ClaimedPush]:
        """Lease due pushes of enabled apps not in `skip_apps` (open breaker, full): each is
        `pushing`, its attempt counted, due again after the app's timeout and a margin (if
        this process dies mid-attempt, another takes it then)."""
        records = await self.conn.fetch(
            """
            WITH due AS (
                SELECT p.turn, p.app FROM pushes p JOIN worker_apps a ON a.name = p.app
                WHERE p.status IN ('queued', 'pushing') AND p.next_attempt_at <= $1
                    AND a.enabled AND p.app <> ALL($3::text[])
                ORDER BY p.next_attempt_at
                LIMIT $2
                FOR UPDATE OF p SKIP LOCKED
            )
            UPDATE pushes p SET status = 'pushing', attempts = p.attempts + 1, updated_at = $1,
                next_attempt_at = $1 + make_interval(secs => a.timeout_s + $4)
            FROM due, worker_apps a
            WHERE p.turn = due.turn AND p.app = due.app AND a.name = p.app
            RETURNING p.turn, p.app, p.account_id, p.chatwoot_conversation_id, p.through,
                p.stream, p.stream_id, p.body, p.attempts, a.url, a.secret, a.timeout_s
            """,
            now, limit, list(skip_apps), lease_margin_s,
        )  # fmt: skip
        return [
            ClaimedPush(
                turn=r["turn"],
                app=r["app"],
                account_id=r["account_id"],
                conversation_id=r["chatwoot_conversation_id"],
                through=r["through"],
                stream=r["stream"],
                stream_id=r["stream_id"],
                body=bytes(r["body"]),
                attempt=r["attempts"],
                url=r["url"],
                secret=r["secret"],
                timeout_s=r["timeout_s"],
            )  # fmt: skip
            for r in records
        ]

    async def unknown_app_pushes(self, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
        """Due pushes whose app is not registered (removed, or a route naming a typo)."""
        records = await self.conn.fetch(
            """
            SELECT p.turn, p.app FROM pushes p
            WHERE p.status IN ('queued', 'pushing') AND p.next_attempt_at <= $1
                AND NOT EXISTS (SELECT 1 FROM worker_apps a WHERE a.name = p.app)
            LIMIT $2 FOR UPDATE OF p SKIP LOCKED
            """,
            now,
            limit,
        )
        return [(r["turn"], r["app"]) for r in records]

    async def settle_push(
        self,
        turn: str,
        app: str,
        *,
        attempt: int,
        status: Push,
        next_attempt_at: dt.datetime | None = None,
        error: str | None = None,
        replies: int | None = None,
    ) -> bool:
        """Write an attempt's outcome, only if the row is still this attempt's (a lease that
        ran out let another process take it: its outcome wins)."""
        done = await self.conn.fetchval(
            """
            UPDATE pushes SET status = $4, next_attempt_at = $5, last_error = $6,
                replies = COALESCE($7, replies), updated_at = clock_timestamp()
            WHERE turn = $1 AND app = $2 AND attempts = $3 AND status = 'pushing'
            RETURNING true
            """,
            turn, app, attempt, str(status), next_attempt_at, error, replies,
        )  # fmt: skip
        return bool(done)

    async def fail_push(self, turn: str, app: str, error: str) -> None:
        await self.conn.execute(
            "UPDATE pushes SET status = 'failed', next_attempt_at = NULL, last_error = $3, "
            "updated_at = clock_timestamp() WHERE turn = $1 AND app = $2",
            turn, app, error,
        )  # fmt: skip

    async def record_attempt(
        self,
        turn: str,
        app: str,
        *,
        attempt: int,
        outcome: str,
        http_status: int | None,
        ms: int,
        error: str | None,
    ) -> None:
        await self.conn.execute(
            """
            INSERT INTO push_attempts (turn, app, attempt, outcome, http_status, ms, error)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            """,
            turn, app, attempt, outcome, http_status, ms, error,
        )  # fmt: skip

    async def requeue_push(self, turn: str, app: str) -> Push | None:
        """An operator's replay of a failed push: queued again, attempts reset, due now. Any
        other status is left as it is (answered: never pushed twice). The status found."""
        found = await self.conn.fetchval(
            "SELECT status FROM pushes WHERE turn = $1 AND app = $2 FOR UPDATE", turn, app
        )
        if found is None:
            return None
        if found == Push.FAILED:
            await self.conn.execute(
                "UPDATE pushes SET status = 'queued', attempts = 0, "
                "next_attempt_at = clock_timestamp(), updated_at = clock_timestamp() "
                "WHERE turn = $1 AND app = $2",
                turn,
                app,
            )
        return Push(found)

    async def next_push_due(self) -> dt.datetime | None:
        value: dt.datetime | None = await self.conn.fetchval(
            "SELECT min(next_attempt_at) FROM pushes WHERE status IN ('queued', 'pushing')"
        )
        return value
