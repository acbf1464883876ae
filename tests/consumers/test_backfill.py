"""The backfill worker against the fake Chatwoot, real Redis and real PostgreSQL: what the
webhooks never brought is published once, stored once, and answered like a webhook."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import structlog

from consumers import service, synthetic
from consumers.backfill import Backfiller, opened
from consumers.chatwoot import ChatwootClient
from consumers.errors import ChatwootError
from consumers.store import Store
from ingress import events
from ingress.settings import Secret, Settings
from ingress.topology import RateLimit, Topology
from tests.conftest import BOT_TOKEN, USER_TOKEN, Fake
from tests.pipeline import emit_turns, persist_runner, rows, xadd, xrange

ACCOUNT = 3
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


@pytest.fixture
async def client(fake: Fake) -> AsyncIterator[ChatwootClient]:
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN),
                              timeout=2.0) as c:  # fmt: skip
        yield c


@pytest.fixture
async def clean(store: Store) -> None:
    async with store.pool.acquire() as conn:
        await conn.execute("DELETE FROM backfill_watermarks")


def worker(
    store: Store, redis: aioredis.Redis, client: ChatwootClient, topology: Topology, **spec: Any
) -> Backfiller:
    topology = msgspec.structs.replace(
        topology, backfill=msgspec.structs.replace(topology.backfill, **spec)
    )
    # Each test run has its own rate-limit bucket (the host names it).
    return Backfiller(store, redis, client, topology, base_url=f"http://{topology.prefix}.test",
                      accounts=[ACCOUNT])  # fmt: skip


def post(fake: Fake, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{fake.url}/_fake/{path}", json={"account": ACCOUNT, **body})
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def conversation(fake: Fake, number: int, **fields: Any) -> None:
    post(fake, "conversations", conversation=number, inbox=1, channel="Channel::Api",
         status="pending", contact={"id": 9000 + number, "name": f"Customer {number}"},
         **fields)  # fmt: skip


def say(fake: Fake, number: int, *contents: str) -> list[int]:
    return [post(fake, "customer", conversation=number, content=c)["id"] for c in contents]


async def persist_all(redis: aioredis.Redis, store: Store, topology: Topology) -> None:
    await persist_runner(redis, store, topology).drain()


async def stored(store: Store) -> list[int]:
    found = await rows(store, "SELECT chatwoot_message_id AS id FROM messages ORDER BY 1")
    return [r["id"] for r in found]


def calls(fake: Fake, ending: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "GET" and r["path"].endswith(ending)]


@pytest.mark.usefixtures("clean")
async def test_lost_messages_are_backfilled_once_and_make_one_turn(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """Customer messages whose webhooks never came become backfill events, rows and a turn."""
    conversation(fake, 1)
    ids = say(fake, 1, "hello?", "anyone there?")
    report = await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    assert (report.conversations, report.found, report.published) == (1, 2, 2)
    entries = [events.decode(events.EventEntry, f) for _, f in
               await xrange(redis, topology.key("events"))]  # fmt: skip
    assert [(e.source, e.event, e.delivery, e.signed) for e in entries] == [
        ("backfill", "message_created", f"backfill:{ACCOUNT}:{i}", False) for i in ids
    ]
    await persist_all(redis, store, topology)
    assert await stored(store) == ids
    [turn] = await emit_turns(redis, store, topology)
    assert [m.id for m in turn.messages] == ids and turn.through == ids[-1]


@pytest.mark.usefixtures("clean")
async def test_a_second_round_publishes_nothing(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """Before persist ran, the delivery ids absorb a repeat; after, nothing is missing."""
    conversation(fake, 1)
    say(fake, 1, "one", "two")
    backfill = worker(store, redis, client, topology)
    assert (await backfill.round(accounts=[ACCOUNT])).published == 2
    again = await backfill.round(accounts=[ACCOUNT], since=time.time() - 3600)
    assert (again.found, again.published) == (2, 0)  # not stored yet, already in the stream
    await persist_all(redis, store, topology)
    last = await backfill.round(accounts=[ACCOUNT], since=time.time() - 3600)
    assert (last.conversations, last.found, last.published) == (1, 0, 0)
    assert int(await redis.xlen(topology.key("events"))) == 2
    await persist_all(redis, store, topology)
    assert len(await stored(store)) == 2
    assert len(await emit_turns(redis, store, topology)) == 1


@pytest.mark.usefixtures("clean")
async def test_pages_through_many_conversations_and_long_ones(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """More than 25 conversations and more than 100 messages: every page is read."""
    for number in range(1, 31):
        conversation(fake, number)
        say(fake, number, f"hi from {number}")
    say(fake, 1, *(f"line {n}" for n in range(150)))
    report = await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    assert (report.conversations, report.published) == (30, 180)
    pages = [r["query"] for r in calls(fake, f"/accounts/{ACCOUNT}/conversations")]
    assert [q.split("page=")[1] for q in pages] == ["1", "2"]
    assert len(calls(fake, f"/accounts/{ACCOUNT}/conversations/1/messages")) == 2
    await persist_all(redis, store, topology)
    assert len(await stored(store)) == 180


@pytest.mark.usefixtures("clean")
async def test_the_watermark_stops_the_scan(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """Conversations quiet since before the watermark are neither paged to nor listed."""
    long_ago = time.time() - 7200
    for number in range(1, 31):
        conversation(fake, number, last_activity_at=long_ago)
    say(fake, 7, "news")
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO backfill_watermarks (account_id, last_activity_at) VALUES ($1, $2)",
            ACCOUNT,
            time.time() - 3600,
        )
    report = await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    assert (report.conversations, report.published) == (1, 1)
    assert len(calls(fake, f"/accounts/{ACCOUNT}/conversations")) == 1  # page 1 only
    assert [r["path"] for r in calls(fake, "/messages")] == [
        f"/api/v1/accounts/{ACCOUNT}/conversations/7/messages"
    ]
    watermark = await rows(store, "SELECT last_activity_at, lease_until FROM backfill_watermarks")
    assert watermark[0]["last_activity_at"] >= time.time() - 60
    assert watermark[0]["lease_until"] is None


@pytest.mark.usefixtures("clean")
async def test_activity_messages_are_skipped(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """'Conversation was marked resolved' (type 2) is never a webhook, nor a backfilled one."""
    conversation(fake, 1)
    [said] = say(fake, 1, "thanks, bye")
    post(fake, "status", conversation=1, status="resolved")
    assert (await worker(store, redis, client, topology).round(accounts=[ACCOUNT])).published == 1
    await persist_all(redis, store, topology)
    assert await stored(store) == [said]


@pytest.mark.usefixtures("clean")
async def test_a_backfilled_human_reply_hands_the_conversation_over(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """A human's reply lost with its webhook still takes the conversation from the bot."""
    conversation(fake, 1)
    say(fake, 1, "I need a person")
    post(fake, "agent", conversation=1, content="Priya here, how can I help?")
    assert (await worker(store, redis, client, topology).round(accounts=[ACCOUNT])).published == 2
    await persist_all(redis, store, topology)
    [row] = await rows(store, "SELECT handler, assignee_type, status FROM conversations")
    assert row == {"handler": "human", "assignee_type": "User", "status": "open"}
    senders = await rows(store, "SELECT sender_kind FROM messages ORDER BY chatwoot_message_id")
    assert [s["sender_kind"] for s in senders] == ["contact", "user"]
    assert await emit_turns(redis, store, topology) == []


@pytest.mark.usefixtures("clean")
async def test_a_backfilled_older_message_does_not_reopen_an_answered_turn(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """A lost message older than a turn already emitted is stored, but asks for no new turn."""
    conversation(fake, 1)
    lost, delivered = say(fake, 1, "first (lost)", "second (delivered)")
    # The second one arrives as its webhook would; a turn covers it.
    [listed] = await client.list_conversations(ACCOUNT, 1)
    [message] = [m for m in await client.message_page(ACCOUNT, 1, after=0) if m.id == delivered]
    body = synthetic.message_created(ACCOUNT, listed, message)
    entry = events.EventEntry(event="message_created", delivery="d-1", account=ACCOUNT,
                              conversation=1, received_at=int(time.time() * 1000), signed=True,
                              body=msgspec.json.encode(body))  # fmt: skip
    await xadd(redis, topology.key("events"), events.encode(entry))
    await persist_all(redis, store, topology)
    [turn] = await emit_turns(redis, store, topology)
    assert turn.through == delivered
    report = await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    assert (report.found, report.published) == (1, 1)
    await persist_all(redis, store, topology)
    assert await stored(store) == [lost, delivered]
    assert len(await emit_turns(redis, store, topology)) == 1  # still only the first turn
    [row] = await rows(store, "SELECT turn_due_at FROM conversations")
    assert row["turn_due_at"] is None


@pytest.mark.usefixtures("clean")
async def test_a_chatwoot_failure_is_waited_out_and_the_next_round_recovers(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """A 500 on the list fails the round (watermark kept), not the worker; it tries again."""
    conversation(fake, 1)
    say(fake, 1, "are you there?")
    fake.faults({"path": f"/accounts/{ACCOUNT}/conversations", "method": "GET", "status": 500,
                 "times": 1})  # fmt: skip
    backfill = worker(store, redis, client, topology, every_s=1)
    # The round the worker runs at start meets the 500; a later one recovers.
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(backfill.run())
        deadline = time.monotonic() + 20
        while not await redis.xlen(topology.key("events")) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        backfill.stop()
        await asyncio.wait_for(running, 10)
    assert [e["status"] for e in logs if e["event"] == "backfill.failed"] == [500]
    assert int(await redis.xlen(topology.key("events"))) == 1
    answered = [r["answered"] for r in calls(fake, f"/accounts/{ACCOUNT}/conversations")]
    assert answered[:2] == [500, 200]


async def test_without_a_user_token_backfill_is_off_with_one_line(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """No CHATWOOT_USER_TOKEN: no backfill worker, and one log line saying why."""
    settings = Settings(chatwoot_base_url=fake.url, chatwoot_api_token=Secret(BOT_TOKEN))
    with structlog.testing.capture_logs() as logs:
        async with service.workers(settings, topology, ["turns", "backfill"], redis,
                                   store) as built:  # fmt: skip
            assert not any(isinstance(w, Backfiller) for w in built)
    off = [e for e in logs if e["event"] == "backfill.off"]
    assert len(off) == 1 and "CHATWOOT_USER_TOKEN" in off[0]["reason"]
    with_token = msgspec.structs.replace(settings, chatwoot_user_token=Secret(USER_TOKEN))
    async with opened(with_token, topology, redis, store) as backfill:
        assert isinstance(backfill, Backfiller)
    assert "backfill" in service.group_names(topology)


@pytest.mark.usefixtures("clean")
async def test_switchboard_backfill_as_a_user_runs_it(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology,
    process_env: dict[str, str],
) -> None:  # fmt: skip
    """`switchboard backfill --account 3` prints what it did; without a user token it says so."""
    conversation(fake, 1)
    say(fake, 1, "hello", "still there?")
    env = process_env | {"CHATWOOT_BASE_URL": fake.url, "CHATWOOT_API_TOKEN": BOT_TOKEN}
    refused = subprocess.run([SWITCHBOARD, "backfill"], env=env, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert refused.returncode == 2
    assert "CHATWOOT_USER_TOKEN is required" in refused.stderr
    done = subprocess.run(
        [SWITCHBOARD, "backfill", "--account", str(ACCOUNT), "--since", "2000-01-01T00:00Z"],
        env=env | {"CHATWOOT_USER_TOKEN": USER_TOKEN}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "backfill: 1 accounts, 1 conversations scanned, 2 messages found, "
        f"2 events published to {topology.key('events')}\n"
    )
    assert int(await redis.xlen(topology.key("events"))) == 2


@pytest.mark.usefixtures("clean")
async def test_an_account_another_process_scans_is_left_alone(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """While another scan holds the account's lease, no Chatwoot call is made for it."""
    conversation(fake, 1)
    say(fake, 1, "hi")
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO backfill_watermarks (account_id, lease_owner, lease_until) "
            "VALUES ($1, 'other-host-1', now() + interval '1 minute')",
            ACCOUNT,
        )
    report = await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    assert (report.busy, report.conversations, report.published) == (1, 0, 0)
    assert calls(fake, "/conversations") == []
    async with store.pool.acquire() as conn:  # the holder died: its lease runs out
        await conn.execute("UPDATE backfill_watermarks SET lease_until = now() - interval '1 s'")
    assert (await worker(store, redis, client, topology).round(accounts=[ACCOUNT])).published == 1


@pytest.mark.usefixtures("clean")
async def test_each_call_takes_a_token_of_the_shared_chatwoot_limits(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """The host and account buckets the deliverers use lose one token per backfill call."""
    conversation(fake, 1)
    say(fake, 1, "hi")
    slow = RateLimit(per_minute=6, burst=100)  # refills 0.1 a second: the count shows
    delivery = msgspec.structs.replace(topology.delivery, host_limit=slow, account_limit=slow)
    limited = msgspec.structs.replace(topology, delivery=delivery)
    await worker(store, redis, client, limited).round(accounts=[ACCOUNT])
    tag = f"{{{topology.key('outbound')}}}:limit"
    for key in (f"{tag}:host:{topology.prefix}.test", f"{tag}:account:{ACCOUNT}"):
        tokens = float(await redis.hget(key, "tokens") or 0)
        assert 98 <= tokens < 98.5, key  # two calls: the list and the messages


async def test_lists_need_a_user_token_as_in_chatwoot(fake: Fake) -> None:
    """The fake, like Chatwoot, answers 401 to a bot token on both lists."""
    conversation(fake, 1)
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), user_token=Secret(BOT_TOKEN)) as bot:
        for call in (bot.list_conversations(ACCOUNT, 1), bot.message_page(ACCOUNT, 1, after=0)):
            with pytest.raises(ChatwootError) as failed:
                await call
            assert failed.value.status == 401 and not failed.value.retryable


@pytest.mark.usefixtures("clean")
async def test_a_stop_ends_a_scan_with_its_watermark_unmoved(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """SIGTERM mid-scan: no further call, the lease given back, the watermark where it was."""
    conversation(fake, 1)
    say(fake, 1, "hi")
    backfill = worker(store, redis, client, topology)
    backfill.stop()
    report = await backfill.scan(ACCOUNT, since=None, periodic=False)
    assert (report.conversations, report.published, report.failed) == (0, 0, 0)
    assert calls(fake, "/conversations") == []
    [row] = await rows(store, "SELECT last_activity_at, lease_owner FROM backfill_watermarks")
    assert row == {"last_activity_at": None, "lease_owner": None}


@pytest.mark.usefixtures("clean")
async def test_a_truncated_scan_goes_on_next_round_and_loses_nothing(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """More active conversations than `max_pages` lists: the watermark stays until the sweep
    has reached it, the next round goes on from the next page, every message is published once."""
    conversation(fake, 1)
    [oldest] = say(fake, 1, "lost while the ingress was down")
    newer = []
    for number in range(2, 27):  # 25 more, newer: exactly one page
        conversation(fake, number)
        newer += say(fake, number, f"hi from {number}")
    backfill = worker(store, redis, client, topology, max_pages=1)
    first = await backfill.round(accounts=[ACCOUNT])
    assert (first.conversations, first.published) == (25, 25)
    assert await rows(store, "SELECT last_activity_at FROM backfill_watermarks") == [
        {"last_activity_at": None}
    ]
    for _ in range(3):
        await backfill.round(accounts=[ACCOUNT])
    published = [f[b"delivery"].decode() for _, f in await xrange(redis, topology.key("events"))]
    assert sorted(published) == sorted(f"backfill:{ACCOUNT}:{i}" for i in [oldest, *newer])
    [mark] = await rows(store, "SELECT last_activity_at FROM backfill_watermarks")
    assert mark["last_activity_at"] is not None


@pytest.mark.usefixtures("clean")
async def test_a_question_a_human_answered_while_we_were_down_makes_no_turn(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """While the ingress was down the customer asked, a human answered and resolved: the
    question is backfilled marked answered, stored, and the bot is not asked to answer it."""
    conversation(fake, 1)
    [question] = say(fake, 1, "what are your opening hours?")
    post(fake, "agent", conversation=1, content="9 to 5, Priya")
    post(fake, "status", conversation=1, status="resolved")
    await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    entries = [events.decode(events.EventEntry, f) for _, f in
               await xrange(redis, topology.key("events"))]  # fmt: skip
    assert {e.delivery: e.answered for e in entries}[f"backfill:{ACCOUNT}:{question}"] is True
    await persist_all(redis, store, topology)
    assert question in await stored(store)
    assert await emit_turns(redis, store, topology) == []


@pytest.mark.usefixtures("clean")
async def test_a_question_asked_after_the_last_reply_still_makes_a_turn(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """Only what a public reply followed is answered: a later question gets its turn."""
    conversation(fake, 1)
    [first] = say(fake, 1, "hello?")
    post(fake, "agent", conversation=1, content="hi!", private=True)  # a note answers nothing
    post(fake, "agent", conversation=1, content="Hi, how can I help?")
    [later] = say(fake, 1, "what are your opening hours?")
    await worker(store, redis, client, topology).round(accounts=[ACCOUNT])
    answered = {e.delivery: e.answered for e in (
        events.decode(events.EventEntry, f) for _, f in await xrange(redis, topology.key("events"))
    )}  # fmt: skip
    assert answered[f"backfill:{ACCOUNT}:{first}"] is True
    assert answered[f"backfill:{ACCOUNT}:{later}"] is False


@pytest.mark.usefixtures("clean")
async def test_a_conversation_that_moves_up_during_a_long_sweep_is_not_skipped(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """A conversation below a truncated scan's cursor that gets new activity jumps above it:
    the pass from the top after the sweep still lists its older lost message."""
    conversation(fake, 1)
    [lost] = say(fake, 1, "lost while the ingress was down")
    time.sleep(1.1)  # Chatwoot's list renders whole seconds: the others must be a second newer
    for number in range(2, 27):
        conversation(fake, number)
        say(fake, number, f"hi from {number}")
    backfill = worker(store, redis, client, topology, max_pages=1, overlap_s=0)
    await backfill.round(accounts=[ACCOUNT])  # the 25 newest; conversation 1 is on page 2
    [again] = say(fake, 1, "hello??")  # conversation 1 now tops the list, above the cursor
    for _ in range(3):
        await backfill.round(accounts=[ACCOUNT])
    published = [f[b"delivery"].decode() for _, f in await xrange(redis, topology.key("events"))]
    assert published.count(f"backfill:{ACCOUNT}:{lost}") == 1
    assert published.count(f"backfill:{ACCOUNT}:{again}") == 1


@pytest.mark.usefixtures("clean")
async def test_a_lost_question_after_the_bots_reply_to_an_earlier_one_still_makes_a_turn(
    fake: Fake, redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient
) -> None:
    """The bot's reply to Q1, posted after Q2 (lost), does not mark Q2 answered: Q2 makes a turn."""
    conversation(fake, 1)
    say(fake, 1, "hi")
    backfill = worker(store, redis, client, topology)
    await backfill.round(accounts=[ACCOUNT])  # Q1 stored, as by its webhook
    await persist_runner(redis, store, topology).drain()
    await emit_turns(redis, store, topology)  # the agent has Q1's turn
    [q2] = say(fake, 1, "my order 1234 never arrived")  # its webhook is lost
    reply = httpx.post(
        f"{fake.url}/api/v1/accounts/{ACCOUNT}/conversations/1/messages",
        headers={"api_access_token": BOT_TOKEN},
        json={"content": "Hello! How can I help?", "message_type": "outgoing"},
    )  # the bot's answer to Q1 lands after Q2
    reply.raise_for_status()
    await backfill.round(accounts=[ACCOUNT])
    await persist_runner(redis, store, topology).drain()
    later = await emit_turns(redis, store, topology)
    assert q2 in [t.through for t in later]
