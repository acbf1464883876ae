"""Agent-started conversations: created in Chatwoot once, even when the create's answer is lost.

Chatwoot has no idempotency key. The intent is committed (`create_started_at`) before the
create call; after a create whose outcome is unknown, the contact's conversations are searched
before another is created, and without the means to search, the reply fails with the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import structlog

from consumers.chatwoot import ChatwootClient
from consumers.errors import ChatwootError
from consumers.store import OutboundRow, Store, Tx
from ingress import events

log = structlog.get_logger("deliver")

# Chatwoot's clock and the database's may disagree by this much when telling a conversation
# created by our earlier, ambiguous create call from the contact's older ones.
CLOCK_SKEW_S = 120.0


class Outreach:
    def __init__(
        self,
        store: Store,
        client: ChatwootClient,
        *,
        now: Callable[[Tx], Awaitable[dt.datetime]],
    ) -> None:
        self.store = store
        self.client = client
        self.now = now

    async def start(self, ref: str, reply: events.OutboundEntry, row: OutboundRow) -> int:
        """An agent starting a conversation: created once, its id kept for retries.

        The intent is committed before the create call; after a create whose outcome is
        unknown, the contact's conversations are searched before creating another.
        """
        if reply.inbox is None or reply.source_id is None:
            raise ChatwootError("a reply without a conversation needs an inbox and a source id",
                                retryable=False)  # fmt: skip
        if row.create_started_at is not None:
            found = await self.find_started(reply, row.create_started_at)
            if found is not None:
                await self._keep(ref, found, recovered=True)
                return found
        async with self.store.transaction() as tx:
            await tx.start_create(ref, await self.now(tx))
        try:
            conversation = await self.client.create_conversation(
                reply.account, inbox=reply.inbox, source_id=reply.source_id, contact=reply.contact
            )
        except ChatwootError as exc:
            if not exc.ambiguous:  # it surely did not take effect: the next try just creates
                async with self.store.transaction() as tx:
                    await tx.start_create(ref, None)
            raise
        await self._keep(ref, conversation, recovered=False)
        return conversation

    async def find_started(self, reply: events.OutboundEntry, started: dt.datetime) -> int | None:
        """The conversation an earlier create call may have made: the contact's newest one
        in the inbox, created since that call. None: Chatwoot has none."""
        if self.client.user_token is None or reply.contact is None:
            raise ChatwootError(
                "an earlier call to start this conversation may have succeeded; without "
                "CHATWOOT_USER_TOKEN and the contact's id it cannot be found, and a second "
                "conversation is not risked",
                retryable=False,
            )
        assert reply.inbox is not None
        listed = await self.client.contact_conversations(reply.account, reply.contact)
        since = started.timestamp() - CLOCK_SKEW_S
        return max(
            (c.id for c in listed if c.inbox_id == reply.inbox and (c.created_at or 0) >= since),
            default=None,
        )

    async def _keep(self, ref: str, conversation: int, *, recovered: bool) -> None:
        async with self.store.transaction() as tx:
            await tx.set_conversation(ref, conversation)
        log.info("conversation.started", chatwoot_conversation=conversation, recovered=recovered)
