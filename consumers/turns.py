"""The turns worker: emits each conversation's due turn to its route's stream, once.

Turn scheduling lives in PostgreSQL (persist sets `turn_due_at`), so it survives restarts,
and `FOR UPDATE SKIP LOCKED` lets any number of workers run without emitting a burst twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from consumers.clock import utcnow
from consumers.conversation import Handler, turn_id
from consumers.polling import PollingWorker
from consumers.store import Store
from ingress import events
from ingress.topology import Topology

log = structlog.get_logger("turns")


class TurnEmitter(PollingWorker):
    name = "turns"

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        topology: Topology,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        batch: int = 50,
    ) -> None:
        super().__init__()
        self.store = store
        self.redis = redis
        self.topology = topology
        self.clock = clock
        self.batch = batch
        self.poll_s = topology.turns.poll_ms / 1000

    async def step(self) -> int:
        return await self.emit_due()

    async def emit_due(self) -> int:
        """Emit the turns due now; the row stays locked until its XADD is done."""
        async with self.store.transaction() as tx:
            due = await tx.due_turns(self.clock(), self.batch)
            for turn in due:
                route = self.topology.route_for(
                    account=turn.account_id, inbox=turn.inbox_id, channel=turn.channel
                )
                # A human took the conversation while the burst was waiting: no turn.
                messages = await tx.turn_messages(turn) if turn.handler is Handler.BOT else []
                if route is not None and messages:
                    entry = events.TurnEntry(
                        turn=turn_id(
                            turn.account_id, turn.conversation_id, turn.last_inbound_message_id
                        ),
                        account=turn.account_id,
                        inbox=turn.inbox_id,
                        conversation=turn.conversation_id,
                        channel=turn.channel,
                        contact=turn.contact_id,
                        through=turn.last_inbound_message_id,
                        messages=messages,
                        route=route.name,
                    )
                    key = self.topology.key(route.stream)
                    await self.redis.xadd(key, events.encode(entry))  # type: ignore[arg-type]
                    log.info(
                        "turn.emitted",
                        turn=entry.turn,
                        stream=key,
                        messages=len(messages),
                    )
                await tx.mark_emitted(turn)
        return len(due)
