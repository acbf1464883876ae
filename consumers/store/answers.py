"""Answer deadlines: when an emitted turn must have its reply, and the agent's extensions."""

from __future__ import annotations

import datetime as dt

import msgspec

from consumers.store.base import SQL
from consumers.store.rows import DueAnswer


class AnswerSQL(SQL):
    async def expect_answer(
        self, account_id: int, conversation_id: int, *, through: int, due: dt.datetime
    ) -> None:
        """A turn covering customer messages up to `through` left for an agent: its reply is
        due by `due`. A deadline already running is kept (a customer who keeps writing to a
        silent bot must not push the hand-off back), and so are its extensions."""
        await self.conn.execute(
            """
            UPDATE conversations SET
                answer_due_at = COALESCE(answer_due_at, $4),
                answer_holds = CASE WHEN answer_due_at IS NULL THEN 0 ELSE answer_holds END,
                answer_through = GREATEST(answer_through, $3)
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND answered_through < $3
            """,
            account_id,
            conversation_id,
            through,
            due,
        )

    async def extend_answer(
        self, account_id: int, conversation_id: int, *, due: dt.datetime, max_holds: int
    ) -> bool:
        """The agent says it is still working (`hold`, `typing_on`): the reply is due by `due`
        instead, unless it has used its `max_holds` extensions. Whether it was extended."""
        extended = await self.conn.fetchval(
            """
            UPDATE conversations SET answer_due_at = GREATEST(answer_due_at, $3),
                answer_holds = answer_holds + 1
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
                AND answer_due_at IS NOT NULL AND answer_holds < $4
            RETURNING true
            """,
            account_id,
            conversation_id,
            due,
            max_holds,
        )
        return bool(extended)

    async def due_answers(self, now: dt.datetime, limit: int) -> list[DueAnswer]:
        """Lock the conversations whose answer is overdue; other workers skip them (SKIP
        LOCKED), and each is settled (handed off or cleared) before the lock is let go."""
        rows = await self.conn.fetch(
            """
            SELECT account_id, chatwoot_conversation_id AS conversation_id, inbox_id, channel,
                handler, status, active, answered_through, answer_through, answer_holds
            FROM conversations
            WHERE answer_due_at IS NOT NULL AND answer_due_at <= $1
            ORDER BY answer_due_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
            """,
            now,
            limit,
        )
        return [msgspec.convert(dict(r), DueAnswer) for r in rows]

    async def reply_in_flight(self, account_id: int, conversation_id: int, through: int) -> bool:
        """Is a public reply to a turn covering `through` (or, without a turn, queued when the
        last customer message was at or after `through`) in the outbox, not yet posted (nor
        suppressed, nor failed)? A turn id other than ours (`account:conversation:through`)
        covers nothing: the CASE keeps the cast from ever seeing one."""
        found = await self.conn.fetchval(
            """
            SELECT true FROM outbound
            WHERE account_id = $1 AND chatwoot_conversation_id = $2 AND kind = 'message'
                AND NOT private AND status IN ('queued', 'sending')
                AND CASE WHEN turn ~ '^[0-9]+:[0-9]+:[0-9]{1,18}$'
                    THEN split_part(turn, ':', 3)::bigint >= $3
                    -- without a turn: what was awaited when it was queued
                    WHEN turn IS NULL THEN covers_through >= $3
                    ELSE false END
            LIMIT 1
            """,
            account_id,
            conversation_id,
            through,
        )
        return bool(found)

    async def restart_answer(
        self, account_id: int, conversation_id: int, *, ref: str, due: dt.datetime
    ) -> bool:
        """The posted reply `ref` covered only part of what is awaited (a reply to turn 1 while
        turn 2 waits): the rest is due by `due`, never earlier than it already was."""
        restarted = await self.conn.fetchval(
            """
            UPDATE conversations c SET answer_due_at = GREATEST(c.answer_due_at, $4)
            FROM outbound o
            WHERE o.ref = $3 AND c.account_id = $1 AND c.chatwoot_conversation_id = $2
                AND c.answer_due_at IS NOT NULL
                AND COALESCE(CASE WHEN o.turn ~ '^[0-9]+:[0-9]+:[0-9]{1,18}$'
                    THEN split_part(o.turn, ':', 3)::bigint END, o.covers_through)
                    < c.answer_through
            RETURNING true
            """,
            account_id,
            conversation_id,
            ref,
            due,
        )
        return bool(restarted)

    async def postpone_answer(
        self, account_id: int, conversation_id: int, due: dt.datetime
    ) -> None:
        """Look again at `due` (a reply is on its way)."""
        await self.conn.execute(
            """
            UPDATE conversations SET answer_due_at = $3
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
            due,
        )

    async def clear_answer(self, account_id: int, conversation_id: int) -> None:
        """Nothing is awaited any more (answered, handed off, or a human has it)."""
        await self.conn.execute(
            """
            UPDATE conversations SET answer_due_at = NULL, answer_holds = 0
            WHERE account_id = $1 AND chatwoot_conversation_id = $2
            """,
            account_id,
            conversation_id,
        )
