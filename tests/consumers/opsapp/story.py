"""A conversation with a story to tell, made by the real workers: webhooks in, a turn, a reply
posted to the fake Chatwoot, a human taking over, a bot reply suppressed, a dead letter."""

from __future__ import annotations

import datetime as dt
import time

import redis.asyncio as aioredis

from consumers.chatwoot import ChatwootClient
from consumers.persist import Persister
from consumers.store import Store
from consumers.turns import TurnEmitter
from ingress import events
from ingress.topology import Topology
from tests.consumers.test_deliver import deliver, deliver_runner, reply
from tests.pipeline import persist, persist_runner, xadd

ACCOUNT, CONVERSATION = 3, 1044
CUSTOMER_MESSAGE = 918310  # message_created__whatsapp_incoming_phone
HUMAN_MESSAGE = 918314  # message_created__outgoing_agent_user
TURN = f"{ACCOUNT}:{CONVERSATION}:{CUSTOMER_MESSAGE}"


async def tell(
    redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)  # past the debounce
    assert await TurnEmitter(store, redis, topology, clock=lambda: later).drain() == 1
    await reply(redis, topology, conversation=CONVERSATION, ref="bot-1", turn=TURN,
                content="<script>alert('bot')</script> on its way")  # fmt: skip
    await deliver(deliver_runner(redis, store, topology, client))
    await persist(redis, store, topology, "message_created__outgoing_agent_user")
    await reply(redis, topology, conversation=CONVERSATION, ref="late-bot")
    await deliver(deliver_runner(redis, store, topology, client))
    await dead_letter(redis, store, topology)


async def dead_letter(redis: aioredis.Redis, store: Store, topology: Topology) -> None:
    """A webhook of the conversation whose body is not JSON: dead-lettered by persist."""
    broken = events.EventEntry(event="message_created", delivery="broken-1", account=ACCOUNT,
                               conversation=CONVERSATION, received_at=int(time.time() * 1000),
                               signed=True, body=b"{not json")  # fmt: skip
    await xadd(redis, topology.key("events"), events.encode(broken))
    handler = Persister(store, topology, bot_id=4)
    runner = persist_runner(redis, store, topology, handler=handler)
    runner.on_dead = handler.dead  # as `consume` runs it: the audit row is marked dead
    await runner.drain()
