"""`switchboard dlq` as a user runs it: every dead letter can be replayed, each reply is sent
once and each webhook stored once, however often a selection is replayed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers import dlq
from consumers.chatwoot import ChatwootClient
from consumers.deliver import Deliverer, Retrier
from consumers.runner import Runner
from consumers.store import Store
from ingress import events
from ingress.settings import Secret
from ingress.topology import Topology
from tests import chatwoot
from tests.conftest import BOT_TOKEN, USER_TOKEN, Fake
from tests.consumers.test_cli import run
from tests.pipeline import persist_runner, rows, xadd, xrange

REPLY = {"account": 3, "conversation": 1046, "content": "Hello from the bot"}


@pytest.fixture
async def client(fake: Fake) -> AsyncIterator[ChatwootClient]:
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), timeout=1.0) as c:
        yield c


class Delivery:
    """The deliver group in-process (stream runner and retry worker), retrying fast."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: Store,
        topology: Topology,
        client: ChatwootClient,
        *,
        echo_wait_ms: int = 20,
    ) -> None:
        spec = msgspec.structs.replace(
            topology.delivery, retry_ms=(10, 20), jitter=0.0, max_attempts=2,
            echo_wait_ms=echo_wait_ms,
        )  # fmt: skip
        topology = msgspec.structs.replace(topology, delivery=spec)
        deliverer = Deliverer(
            store, client, topology, redis=redis, base_url=f"http://{topology.prefix}.test"
        )
        self.runner = Runner(
            redis,
            key=topology.key("outbound"),
            group="deliver",
            spec=topology.groups["deliver"],
            dead_key=topology.key("dead"),
            handler=deliverer,
            consumer="test-deliver",
        )
        self.retrier = Retrier(deliverer)

    async def drain(self, rounds: int = 3) -> None:
        for _ in range(rounds):
            await self.runner.drain()
            await self.retrier.drain()
            await asyncio.sleep(0.03)  # past the fast retry delays


async def reply(redis: aioredis.Redis, topology: Topology, **fields: Any) -> str:
    entry = msgspec.convert(REPLY | fields, events.OutboundEntry)
    return await xadd(redis, topology.key("outbound"), events.encode(entry))


async def dead_ids(redis: aioredis.Redis, topology: Topology) -> list[str]:
    return [i for i, _ in await xrange(redis, topology.key("dead"))]


async def test_failed_reply_replayed_by_id_is_sent_once(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
    process_env: dict[str, str],
) -> None:
    """A reply Chatwoot refused for good (404), once Chatwoot is fixed: `dlq replay ID` queues
    it again and it reaches Chatwoot exactly once; replaying again sends nothing more."""
    fake.faults({"path": "messages", "status": 404, "body": '{"error": "not found"}'})
    entry_id = await reply(redis, topology)  # no ref: the deliver group derived one
    delivery = Delivery(redis, store, topology, client)
    await delivery.drain()
    [dead_id] = await dead_ids(redis, topology)
    assert fake.messages() == []
    fake.faults()  # Chatwoot is fixed

    done = run(process_env, "dlq", "replay", dead_id)
    ref = f"{topology.key('outbound')}:{entry_id}"
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"reply {ref} queued again: the deliver group sends it\n"
    [row] = await rows(store, "SELECT status, attempts, last_error, next_attempt_at FROM outbound")
    assert row["status"] == "queued" and row["attempts"] == 0 and "404" in row["last_error"]
    await delivery.drain()
    [message] = fake.messages()
    assert message["content_attributes"]["ext_ref"] == ref
    [row] = await rows(store, "SELECT status, attempts, last_error FROM outbound")
    assert row["status"] == "sent" and row["attempts"] == 1
    assert "404" in row["last_error"]  # kept, for history

    again = run(process_env, "dlq", "replay", dead_id)
    assert again.returncode == 1 and again.stdout == f"no dead entry {dead_id}\n"
    await delivery.drain()
    assert len(fake.messages()) == 1
    assert await dead_ids(redis, topology) == []


async def test_replaying_a_selection_twice_sends_and_stores_once(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
    process_env: dict[str, str],
) -> None:
    """`dlq replay --all` puts a retried reply that failed for good back in the outbox and a
    webhook back on its stream; run twice, and with its dead letter written twice (a crash
    between dead-lettering and acking), the reply is sent once and the webhook stored once."""
    fake.faults({"path": "messages", "status": 500})
    await reply(redis, topology, ref="r-retried")
    delivery = Delivery(redis, store, topology, client)
    await delivery.drain(rounds=5)
    [reply_dead] = await xrange(redis, topology.key("dead"))
    assert reply_dead[1][b"reason"] == b"max_attempts" and reply_dead[1][b"ref"] == b"r-retried"
    webhook = _dead_webhook(topology, "message_created__webwidget_incoming_with_email")
    for fields in (reply_dead[1], webhook, webhook):  # each dead letter twice
        await xadd(redis, topology.key("dead"), fields)
    fake.faults()

    first = run(process_env, "dlq", "replay", "--all")
    assert first.returncode == 0, first.stderr
    # The reply's first dead letter queues it again; its copy finds it queued already.
    assert first.stdout == (
        "replayed 4: 2 re-published, 1 replies queued again, 1 replies left as they were\n"
    )
    await delivery.drain()
    await persist_runner(redis, store, topology).drain()
    await xadd(redis, topology.key("dead"), reply_dead[1])  # and yet another copy, once sent
    second = run(process_env, "dlq", "replay", "--all")
    assert second.stdout == (
        "replayed 1: 0 re-published, 0 replies queued again, 1 replies left as they were\n"
    )
    assert run(process_env, "dlq", "replay", "--all").stdout.startswith("replayed 0:")
    await delivery.drain()
    await persist_runner(redis, store, topology).drain()

    assert [m["content"] for m in fake.messages()] == ["Hello from the bot"]
    stored = await rows(store, "SELECT count(*) AS n FROM messages WHERE direction = 'inbound'")
    assert stored == [{"n": 1}]
    assert await dead_ids(redis, topology) == []


async def test_replay_and_purge_select_by_reason_and_time(
    redis: aioredis.Redis, store: Store, topology: Topology, process_env: dict[str, str]
) -> None:
    """--reason and --since select what replay, purge and list act on; nothing else moves."""
    for reason in ("undecodable", "permanent", "undecodable"):
        dead = events.DeadEntry(stream=topology.key("events"), group="persist", id="1-0",
                                reason=reason, original={"event": b"x"})  # fmt: skip
        await xadd(redis, topology.key("dead"), events.encode(dead))
    listed = run(process_env, "dlq", "list", "--reason", "permanent")
    assert len(listed.stdout.splitlines()) == 1 and "permanent" in listed.stdout
    assert run(process_env, "dlq", "purge", "--since", "2999-01-01").stdout == "purged 0\n"
    assert run(process_env, "dlq", "purge", "--reason", "undecodable").stdout == "purged 2\n"
    [(_, left)] = await xrange(redis, topology.key("dead"))
    assert left[b"reason"] == b"permanent"
    replayed = run(process_env, "dlq", "replay", "--reason", "permanent", "--since", "2000-01-01")
    assert replayed.stdout.startswith("replayed 1: 1 re-published"), replayed.stderr
    assert await dead_ids(redis, topology) == []
    assert run(process_env, "dlq", "replay").returncode == 2  # neither an id nor a selection
    assert run(process_env, "dlq", "purge", "1-0", "--all").returncode == 2  # both


async def test_an_original_field_named_reason_is_kept_apart(
    redis: aioredis.Redis, store: Store, topology: Topology, process_env: dict[str, str]
) -> None:
    """An entry carrying its own `reason` field: the dead letter's reason stands, and replay
    puts the entry back with its own field as it was."""
    await redis.xadd(topology.key("events"), {"event": "message_created", "reason": "mine"})
    await persist_runner(redis, store, topology).drain()
    [(dead_id, fields)] = await xrange(redis, topology.key("dead"))
    assert fields[b"reason"] == b"undecodable" and fields[b"_reason"] == b"mine"
    assert run(process_env, "dlq", "replay", dead_id).returncode == 0
    [*_, (_, last)] = await xrange(redis, topology.key("events"))
    assert last == {b"event": b"message_created", b"reason": b"mine"}


def _dead_webhook(topology: Topology, fixture: str) -> dict[str, bytes]:
    """The dead letter of a webhook that failed while a bug was deployed."""
    data = chatwoot.payload(fixture)
    entry = events.EventEntry(
        event=str(data["event"]),
        delivery=str(uuid.uuid4()),
        account=3,
        conversation=data["conversation"]["id"],
        received_at=int(time.time() * 1000),
        signed=True,
        body=chatwoot.rails_json(data),
    )
    dead = events.DeadEntry(
        stream=topology.key("events"),
        group="persist",
        id="1-0",
        deliveries=5,
        reason="permanent",
        error="StoreError: a bug since fixed",
        original=events.encode(entry),
    )
    return events.encode(dead)


async def test_replies_chatwoot_has_or_the_outbox_never_saw(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
    process_env: dict[str, str],
) -> None:
    """A failed reply whose echo came back (it landed after all) is not sent again; a reply
    that never reached the outbox goes back on its stream under the ref it would have had,
    so two copies of its dead letter still send it once."""
    outbound = topology.key("outbound")
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ('landed', 3, 1046, 'message', 'failed')"
        )
        await conn.execute(
            "INSERT INTO messages (account_id, chatwoot_message_id, chatwoot_conversation_id, "
            "direction, sender_kind, status, ext_ref) "
            "VALUES (3, 77, 1046, 'outbound', 'agent_bot', 'sent', 'landed')"
        )
    landed = events.DeadEntry(stream=outbound, group="deliver", reason="max_attempts",
                              original=_reply_fields() | {"ref": b"landed"})  # fmt: skip
    unseen = events.DeadEntry(stream=outbound, group="deliver", id="5-0", reason="permanent",
                              original=_reply_fields())  # fmt: skip
    for dead in (landed, unseen, unseen):
        await xadd(redis, topology.key("dead"), events.encode(dead))

    done = run(process_env, "dlq", "replay", "--all")
    assert done.stdout == (
        "replayed 3: 2 re-published, 0 replies queued again, 1 replies left as they were\n"
    ), done.stderr
    republished = [f for _, f in await xrange(redis, outbound)]
    assert [f[b"ref"] for f in republished] == [f"{outbound}:5-0".encode()] * 2
    await Delivery(redis, store, topology, client).drain()
    [message] = fake.messages()
    assert message["content_attributes"]["ext_ref"] == f"{outbound}:5-0"
    [row] = await rows(store, "SELECT status FROM outbound WHERE ref = 'landed'")
    assert row["status"] == "failed"


def _reply_fields() -> dict[str, bytes]:
    return events.encode(msgspec.convert(REPLY, events.OutboundEntry))


async def test_replay_after_an_ambiguous_last_attempt_that_landed_posts_nothing(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    process_env: dict[str, str],
) -> None:
    """A reply whose last attempt got a 504 after Chatwoot saved it, replayed: the message
    list shows it landed, so it is recorded sent and never posted a second time."""
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN),
                              timeout=1.0) as client:  # fmt: skip
        fake.faults(
            {"path": "messages", "method": "POST", "status": 500, "times": 1},
            {"path": "messages", "method": "POST", "status": 504, "after": True, "times": 1},
        )
        await reply(redis, topology, ref="r-amb")
        delivery = Delivery(redis, store, topology, client)
        await delivery.drain(rounds=5)
        [row] = await rows(store, "SELECT status FROM outbound")
        assert row["status"] == "failed"
        [dead_id] = await dead_ids(redis, topology)
        fake.faults()
        done = run(process_env, "dlq", "replay", dead_id)
        assert done.returncode == 0, done.stderr
        await delivery.drain()
    sent = [m["content_attributes"].get("ext_ref") for m in fake.messages()]
    assert sent == ["r-amb"]
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"


async def test_replay_without_a_user_token_waits_for_the_echo(
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
    process_env: dict[str, str],
) -> None:
    """Without a message list to ask, a replayed reply that was attempted before is first
    given the echo's time (`sending`, no attempt counted), then posted once."""
    fake.faults({"path": "messages", "status": 404, "body": '{"error": "not found"}'})
    await reply(redis, topology, ref="r-404")
    delivery = Delivery(redis, store, topology, client, echo_wait_ms=1_500)
    await delivery.drain()
    [dead_id] = await dead_ids(redis, topology)
    fake.faults()
    assert run(process_env, "dlq", "replay", dead_id).returncode == 0
    await delivery.retrier.drain()
    [row] = await rows(store, "SELECT status, attempts FROM outbound")
    assert (row["status"], row["attempts"]) == ("sending", 0)
    assert fake.messages() == []
    await asyncio.sleep(1.6)  # the echo's time is up: no echo came
    await delivery.drain()
    assert [m["content_attributes"]["ext_ref"] for m in fake.messages()] == ["r-404"]


async def test_a_dead_letter_with_a_non_utf8_field_name_is_listed_shown_and_replayed(
    redis: aioredis.Redis, topology: Topology, process_env: dict[str, str]
) -> None:
    """A dead letter holding a field name that is not UTF-8 (as the runner wrote it before)
    is listed and shown (escaped), and replayed with the name's bytes as they were."""
    events_key = topology.key("events")
    dead_id = await xadd(redis, topology.key("dead"), {
        b"\xff": b"x", b"stream": events_key.encode(), b"group": b"persist", b"id": b"1-0",
        b"deliveries": b"1", b"reason": b"undecodable", b"error": b"e",
    })  # fmt: skip
    listed = run(process_env, "dlq", "list")
    assert listed.returncode == 0 and dead_id in listed.stdout, listed.stderr
    shown = run(process_env, "dlq", "show", dead_id)
    assert shown.returncode == 0 and "\\xff: x" in shown.stdout, shown.stderr
    replayed = run(process_env, "dlq", "replay", dead_id)
    assert replayed.returncode == 0, replayed.stderr
    [(_, fields)] = await xrange(redis, events_key)
    assert fields == {b"\xff": b"x"}
    assert await dead_ids(redis, topology) == []


async def test_a_selection_ends_at_the_last_dead_letter_present_when_it_starts(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """A dead letter written while a selection is read (purge or replay under way, a
    replayed entry dead-lettered again) is not part of it."""
    dead_key = topology.key("dead")
    old = events.encode(events.DeadEntry(stream="s", group="g", reason="old"))
    for _ in range(dlq.PAGE + 5):
        await xadd(redis, dead_key, old)
    selected = dlq.select(redis, topology, dlq.Selection())
    first = [await anext(selected)]
    new = await xadd(redis, dead_key, events.encode(events.DeadEntry(stream="s", reason="new")))
    rest = [entry_id async for entry_id, _ in selected]
    assert len(first + rest) == dlq.PAGE + 5 and new not in rest
    assert await dlq.purge(redis, topology, dlq.Selection(reason="old")) == dlq.PAGE + 5
    assert await dead_ids(redis, topology) == [new]
