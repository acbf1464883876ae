"""The deliver group against the fake Chatwoot server: each reply posted once."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from consumers.chatwoot import ChatwootClient
from consumers.deliver import Deliverer, Retrier
from consumers.persist import Persister
from consumers.runner import Runner, StreamEntry, by_conversation
from consumers.store import Store
from ingress import events
from ingress.settings import Secret
from ingress.topology import RateLimit, Topology
from tests import chatwoot
from tests.conftest import BOT_TOKEN, USER_TOKEN, Fake
from tests.pipeline import feed, persist, rows, xadd, xrange

MESSAGES = "/api/v1/accounts/3/conversations/1046/messages"


@pytest.fixture
async def client(fake: Fake) -> AsyncIterator[ChatwootClient]:
    async with ChatwootClient(fake.url, Secret(BOT_TOKEN), timeout=1.0) as c:
        yield c


FAST = {"retry_ms": (10, 20), "jitter": 0.0, "echo_wait_ms": 300, "max_attempts": 3}


class Clock:
    """The deliverer's clock, moved by the test: retries come due without sleeping. It
    starts at the real time, so that rows compared with the database's `now()` agree."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)


class Delivery:
    """The deliver group in-process: the stream runner and the retry worker, fast retries."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: Store,
        topology: Topology,
        client: ChatwootClient,
        **delivery: Any,
    ) -> None:
        spec = msgspec.structs.replace(topology.delivery, **(FAST | delivery))
        topology = msgspec.structs.replace(topology, delivery=spec)
        # The base URL names the host's rate-limit bucket; each test run has its own.
        host = f"http://{topology.prefix}.test"
        self.clock = Clock()
        self.deliverer = Deliverer(
            store, client, topology, redis=redis, base_url=host, clock=self.clock
        )
        self.runner = Runner(
            redis,
            key=topology.key("outbound"),
            group="deliver",
            spec=topology.groups["deliver"],
            dead_key=topology.key("dead"),
            handler=self.deliverer,
            consumer="test-deliver",
        )
        self.retrier = Retrier(self.deliverer)

    async def drain(self) -> None:
        await self.runner.drain()
        await self.retrier.drain()


def deliver_runner(
    redis: aioredis.Redis, store: Store, topology: Topology, client: ChatwootClient, **kw: Any
) -> Delivery:
    return Delivery(redis, store, topology, client, **kw)


async def reply(redis: aioredis.Redis, topology: Topology, **fields: Any) -> str:
    values: dict[str, Any] = {"account": 3, "conversation": 1046, "content": "Hello from the bot"}
    entry = msgspec.convert(values | fields, events.OutboundEntry)
    return await xadd(redis, topology.key("outbound"), events.encode(entry))


async def deliver(delivery: Delivery, rounds: int = 1, *, step_s: float = 0.05) -> None:
    """Drain, then move the clock past the fast retry delays (not the echo wait), `rounds`
    times."""
    for _ in range(rounds):
        await delivery.drain()
        delivery.clock.advance(step_s)


def posts(fake: Fake) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "POST" and r["path"] == MESSAGES]


async def test_reply_is_posted_with_ext_ref_and_recorded(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """The reply reaches Chatwoot's create-message API once, carrying its ref."""
    await reply(redis, topology, ref="r-1", content_attributes={"source": "llm"})
    await deliver(deliver_runner(redis, store, topology, client))
    [post] = posts(fake)
    assert post["token_ok"] is True
    assert post["json"] == {
        "content": "Hello from the bot",
        "message_type": "outgoing",
        "private": False,
        "content_type": "text",
        "content_attributes": {"source": "llm", "ext_ref": "r-1"},
    }
    [row] = await rows(store, "SELECT status, attempts, chatwoot_message_id FROM outbound")
    assert row["status"] == "sent" and row["attempts"] == 1
    assert row["chatwoot_message_id"] == fake.messages()[0]["id"]


async def test_same_ref_twice_posts_once(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A second entry with the same ref sends nothing."""
    await reply(redis, topology, ref="same")
    await reply(redis, topology, ref="same")
    await deliver(deliver_runner(redis, store, topology, client))
    assert len(posts(fake)) == 1


async def test_missing_ref_is_derived_from_the_entry(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Without a ref, the entry id is the ref: handling the entry again posts nothing."""
    entry_id = await reply(redis, topology)
    delivery = deliver_runner(redis, store, topology, client)
    await deliver(delivery)
    [(_, fields)] = await xrange(redis, topology.key("outbound"))
    await delivery.deliverer(StreamEntry(id=entry_id, fields=fields, deliveries=2))
    [post] = posts(fake)
    assert post["json"]["content_attributes"]["ext_ref"] == f"{topology.key('outbound')}:{entry_id}"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(404, '{"error": "Resource could not be found"}', id="404"),
        pytest.param(401, '{"error": "Unauthorized"}', id="401"),
        pytest.param(422, '{"error": "Content is too long"}', id="422"),
    ],
)
async def test_permanent_errors_fail_once_and_dead_letter(
    status: int,
    body: str,
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
) -> None:
    """A 4xx is not retried: the reply is failed and its entry dead-lettered with the reason."""
    fake.faults({"path": "messages", "status": status, "body": body})
    await reply(redis, topology, ref="doomed")
    await deliver(deliver_runner(redis, store, topology, client), rounds=3)
    assert len(posts(fake)) == 1
    [row] = await rows(store, "SELECT status, last_error FROM outbound")
    assert row["status"] == "failed" and str(status) in row["last_error"]
    letters: Any = await redis.xrange(topology.key("dead"))
    [(_, fields)] = letters
    assert fields[b"reason"] == b"permanent" and fields[b"ref"] == b"doomed"


async def test_transient_error_is_retried(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A 503 schedules a retry in the outbox; the retry worker posts it."""
    fake.faults({"path": "messages", "status": 503, "times": 1})
    await reply(redis, topology, ref="later")
    await deliver(deliver_runner(redis, store, topology, client), rounds=3)
    assert len(posts(fake)) == 2
    assert len(fake.messages()) == 1
    [row] = await rows(store, "SELECT status, attempts FROM outbound")
    assert row == {"status": "sent", "attempts": 2}


async def test_ambiguous_timeout_then_list_check_posts_once(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """Chatwoot saved it but the answer timed out: the retry finds it by ext_ref, posts nothing."""
    fake.faults({"path": "messages", "method": "POST", "delay_ms": 1500, "after": True, "times": 1})
    async with ChatwootClient(
        fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN), timeout=0.5
    ) as client:
        await reply(redis, topology, ref="amb")
        await deliver(deliver_runner(redis, store, topology, client), rounds=3)
    assert len(posts(fake)) == 1
    assert len(fake.messages()) == 1
    [row] = await rows(store, "SELECT status, chatwoot_message_id FROM outbound")
    assert row == {"status": "sent", "chatwoot_message_id": fake.messages()[0]["id"]}


async def test_ambiguous_failure_then_echo_posts_once(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Without a user token, the deliverer waits for the echo webhook (matched by ext_ref),
    which proves the first POST landed, instead of posting again."""
    fake.faults({"path": "messages", "status": 502, "after": True, "times": 1})
    await reply(redis, topology, ref="pysvc-01J0ZK7Q4T9V2M6X8B3N5R1C7D")
    delivery = deliver_runner(redis, store, topology, client)
    await deliver(delivery, rounds=3)  # the retry waits for the echo (300 ms): nothing posted
    assert len(posts(fake)) == 1
    await persist(redis, store, topology, "message_created__outgoing_agent_bot_echo")
    delivery.clock.advance(0.3)  # the echo wait is over
    await deliver(delivery, rounds=2)
    assert len(posts(fake)) == 1
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"


async def test_a_reply_being_sent_elsewhere_is_not_sent_again(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """While another deliverer holds the reply's lease, this one waits instead of posting."""
    async with store.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status, "
            "attempts, next_attempt_at) VALUES ('busy', 3, 1046, 'message', 'sending', 1, "
            "now() + interval '1 minute')"
        )
    await reply(redis, topology, ref="busy")
    await deliver_runner(redis, store, topology, client).drain()
    assert posts(fake) == []
    [row] = await rows(store, "SELECT status, attempts FROM outbound")
    assert row == {"status": "sending", "attempts": 1}  # the other deliverer's to finish


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("handoff", "toggle_status", {"status": "open"}),
        ("resolve", "toggle_status", {"status": "resolved"}),
        ("typing_on", "toggle_typing_status", {"typing_status": "on"}),
        ("typing_off", "toggle_typing_status", {"typing_status": "off"}),
    ],
)
async def test_action_kinds(
    kind: str,
    path: str,
    body: dict[str, str],
    redis: aioredis.Redis,
    store: Store,
    topology: Topology,
    fake: Fake,
    client: ChatwootClient,
) -> None:
    """Hand-off and resolve toggle the status; typing kinds toggle the indicator."""
    await reply(redis, topology, kind=kind, content="")
    await deliver(deliver_runner(redis, store, topology, client))
    [request] = fake.requests()
    assert request["path"].endswith(path) and request["json"] == body
    [row] = await rows(store, "SELECT status, kind FROM outbound")
    assert row == {"status": "sent", "kind": kind}


async def test_reply_to_a_human_handled_conversation_is_suppressed(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Once a human replied, the bot's pending reply is not posted: it is `suppressed`."""
    await persist(redis, store, topology, "message_created__outgoing_agent_user")
    await reply(redis, topology, conversation=1044, ref="late-bot")
    await deliver(deliver_runner(redis, store, topology, client))
    assert posts(fake) == [] and fake.requests() == []
    [row] = await rows(store, "SELECT status, last_error FROM outbound")
    assert row == {"status": "suppressed", "last_error": "a human handles the conversation"}


async def test_superseded_reply_is_dropped_and_the_current_one_marks_read(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A reply to an old turn is dropped; the reply to the newest turn goes out and marks the
    customer messages it answered as read."""
    first = "message_created__whatsapp_incoming_phone"
    await persist(redis, store, topology, first)
    newer = chatwoot.payload(first)
    newer["id"] = 918400
    await persist(redis, store, topology, newer)
    await reply(redis, topology, conversation=1044, ref="old", turn="3:1044:918310")
    await reply(redis, topology, conversation=1044, ref="new", turn="3:1044:918400")
    await deliver(deliver_runner(redis, store, topology, client))
    sent = await rows(store, "SELECT ref, status FROM outbound ORDER BY ref")
    assert sent == [{"ref": "new", "status": "sent"}, {"ref": "old", "status": "suppressed"}]
    assert len(fake.requests()) == 1
    statuses = await rows(store, "SELECT status FROM messages WHERE direction = 'inbound'")
    assert [s["status"] for s in statuses] == ["read", "read"]


async def test_handoff_reply_stops_the_bot(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """An agent's `handoff` opens the conversation in Chatwoot and makes it human-handled."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    await reply(redis, topology, conversation=1044, kind="handoff", content="")
    await deliver(deliver_runner(redis, store, topology, client))
    [conv] = await rows(store, "SELECT handler FROM conversations")
    assert conv["handler"] == "human"


async def retry_at(store: Store) -> float:
    [row] = await rows(
        store, "SELECT extract(epoch FROM next_attempt_at - now()) AS s FROM outbound"
    )
    return float(row["s"])


async def test_retry_after_is_honoured(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A 429 with Retry-After: 30 schedules the next attempt no sooner than 30 s."""
    fake.faults({"path": "messages", "status": 429, "body": "Retry later", "retry_after": 30})
    await reply(redis, topology, ref="slow-down")
    await deliver(deliver_runner(redis, store, topology, client))
    assert len(posts(fake)) == 1
    assert 28 < await retry_at(store) <= 30


async def test_a_huge_retry_after_is_capped_at_an_hour(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A Retry-After past what a date can hold waits an hour: the reply stays queued for its
    retry, not dead-lettered as a bug with its row left `sending`."""
    fake.faults({"path": "messages", "status": 429, "body": "Retry later", "retry_after": 10**18})
    await reply(redis, topology, ref="much-later")
    await deliver(deliver_runner(redis, store, topology, client))
    assert len(posts(fake)) == 1
    assert 3500 < await retry_at(store) <= 3600
    assert await redis.xlen(topology.key("dead")) == 0


async def test_schedule_with_jitter_and_cap(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Delays follow the schedule, spread by the jitter; after max_attempts: failed and dead."""
    fake.faults({"path": "messages", "status": 500})
    delivery = deliver_runner(
        redis, store, topology, client, retry_ms=(10, 40), jitter=0.5, max_attempts=4
    )
    await reply(redis, topology, ref="never")
    await deliver(delivery, rounds=8)
    assert len(posts(fake)) == 4
    [row] = await rows(store, "SELECT status, attempts FROM outbound")
    assert row == {"status": "failed", "attempts": 4}
    [(_, fields)] = await xrange(redis, topology.key("dead"))
    assert fields[b"reason"] == b"max_attempts" and fields[b"ref"] == b"never"
    assert fields[b"content"] == b"Hello from the bot"


async def test_one_failing_conversation_does_not_hold_up_others(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Replies behind a failing one go out at once; the failing one waits for its retry."""
    fake.faults({"path": "conversations/1046/messages", "status": 500, "times": 1})
    await reply(redis, topology, ref="fails", conversation=1046)
    await reply(redis, topology, ref="fine", conversation=1047)
    delivery = deliver_runner(redis, store, topology, client, retry_ms=(60_000,))
    await delivery.runner.drain()
    sent = await rows(store, "SELECT ref, status FROM outbound ORDER BY ref")
    assert sent == [{"ref": "fails", "status": "sending"}, {"ref": "fine", "status": "sent"}]


async def test_breaker_opens_per_account(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """After repeated failures an account's breaker opens: its replies wait without calling
    Chatwoot, other accounts' replies go out; after open_ms one probe closes it again."""
    fake.faults({"path": "accounts/3/", "status": 500, "times": 2})
    breaker = msgspec.structs.replace(topology.delivery.breaker, failures=2, open_ms=300)
    delivery = deliver_runner(redis, store, topology, client, breaker=breaker, retry_ms=(10,))
    for n in range(3):
        await reply(redis, topology, ref=f"a3-{n}")
    await reply(redis, topology, ref="a4", account=4)
    await delivery.runner.drain()
    calls = [r["path"].split("/")[4] for r in posts_any(fake)]
    assert calls == ["3", "3", "4"]  # the third reply of account 3 did not call
    delivery.clock.advance(0.35)  # the breaker is half-open
    await deliver(delivery, rounds=3)
    statuses = await rows(store, "SELECT ref, status FROM outbound ORDER BY ref")
    assert {s["status"] for s in statuses} == {"sent"}


def posts_any(fake: Fake) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "POST"]


async def test_rate_limit_is_shared_through_redis(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """With a bucket of 2 per account, a third reply is scheduled for when a token is back,
    whichever deliverer process handles it."""
    limit = RateLimit(per_minute=60, burst=2)
    one = deliver_runner(redis, store, topology, client, account_limit=limit)
    other = deliver_runner(redis, store, topology, client, account_limit=limit)
    await reply(redis, topology, ref="r1")
    await one.runner.drain()
    await reply(redis, topology, ref="r2")
    await reply(redis, topology, ref="r3")
    await other.runner.drain()
    assert len(posts(fake)) == 2
    [row] = await rows(store, "SELECT ref FROM outbound WHERE status = 'queued'")
    assert row["ref"] == "r3"
    delay = await rows(
        store, "SELECT extract(epoch FROM next_attempt_at - now()) AS s FROM outbound "
        "WHERE ref = 'r3'"
    )  # fmt: skip
    assert 0 < float(delay[0]["s"]) <= 1.1  # one token a second


async def test_an_agent_can_start_a_conversation(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A reply to an inbox and source id creates the conversation, then posts into it."""
    await reply(
        redis, topology, conversation=None, inbox=12, source_id="+15550001111", contact=77,
        ref="outreach",
    )  # fmt: skip
    await deliver(deliver_runner(redis, store, topology, client))
    first, second = posts_any(fake)
    assert first["path"] == "/api/v1/accounts/3/conversations"
    assert first["json"] == {"source_id": "+15550001111", "inbox_id": 12, "contact_id": 77}
    assert second["path"].endswith("/messages")
    [row] = await rows(store, "SELECT status, chatwoot_conversation_id FROM outbound")
    assert (
        row["status"] == "sent"
        and f"/conversations/{row['chatwoot_conversation_id']}/" in (second["path"])
    )


async def test_echo_first_still_marks_the_turn_answered(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """When our echo proves the reply landed before the POST's answer does, the turn's
    customer messages are answered all the same (a later turn will not ask again)."""
    await persist(redis, store, topology, "message_created__whatsapp_incoming_phone")
    fake.faults({"path": "messages", "status": 502, "after": True, "times": 1})
    await reply(redis, topology, conversation=1044, ref="landed", turn="3:1044:918310")
    await deliver_runner(redis, store, topology, client).runner.drain()
    echo = chatwoot.payload("message_created__outgoing_agent_bot_echo")
    echo["conversation"] = chatwoot.payload("message_created__whatsapp_incoming_phone")[
        "conversation"
    ]
    echo["content_attributes"] = {"ext_ref": "landed"}
    await persist(redis, store, topology, echo)
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"
    [conv] = await rows(store, "SELECT answered_through FROM conversations")
    assert conv["answered_through"] == 918310
    [message] = await rows(store, "SELECT status FROM messages WHERE direction = 'inbound'")
    assert message["status"] == "read"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 401, "body": '{"error": "Unauthorized"}'}, id="401"),
        pytest.param({"status": 404}, id="404"),
        pytest.param({"delay_ms": 800}, id="timeout"),
    ],
)
async def test_a_failed_check_holds_the_reply_without_an_attempt(
    fault: dict[str, Any], redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """After an ambiguous POST, a message list that fails means "unknown": nothing is posted,
    the reply stays `sending`, held with backoff, no attempt counted; once the list answers,
    the reply is found there and never posted twice."""
    fake.faults({"path": "messages", "method": "POST", "status": 502, "after": True, "times": 1})
    async with ChatwootClient(
        fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN), timeout=0.5
    ) as client:
        delivery = deliver_runner(redis, store, topology, client)
        await reply(redis, topology, ref="unsure")
        await delivery.drain()
        fake.faults({"path": "messages", "method": "GET", **fault})
        delivery.clock.advance(0.05)
        await delivery.drain()
        held = delivery.clock.at + dt.timedelta(seconds=0.01)  # retry_ms[0], no jitter
        [row] = await rows(
            store, "SELECT status, attempts, last_error, next_attempt_at FROM outbound"
        )
        assert row["status"] == "sending" and row["attempts"] == 1
        assert row["last_error"].startswith("cannot tell whether attempt 1 landed")
        assert row["next_attempt_at"] == held
        checks = len([r for r in fake.requests() if r["method"] == "GET"])
        await delivery.drain()  # not due yet: no check, no post
        assert len([r for r in fake.requests() if r["method"] == "GET"]) == checks
        fake.faults()
        delivery.clock.advance(0.05)
        await delivery.drain()
    assert len(posts(fake)) == 1 and len(fake.messages()) == 1
    [row] = await rows(store, "SELECT status, attempts, chatwoot_message_id FROM outbound")
    assert row == {"status": "sent", "attempts": 1,
                   "chatwoot_message_id": fake.messages()[0]["id"]}  # fmt: skip


async def test_an_attempt_ends_inside_its_lease(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """An attempt slower than its budget (a share of the lease) is cut short as ambiguous:
    the next one finds the message Chatwoot saved instead of posting again."""
    fake.faults({"path": "messages", "method": "POST", "delay_ms": 1500, "after": True,
                 "times": 1})  # fmt: skip
    async with ChatwootClient(
        fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN), timeout=5.0
    ) as client:
        delivery = deliver_runner(redis, store, topology, client, lease_ms=400)
        await reply(redis, topology, ref="slow")
        started = asyncio.get_running_loop().time()
        await delivery.drain()
        assert asyncio.get_running_loop().time() - started < 1.0  # not the 5 s HTTP timeout
        [row] = await rows(store, "SELECT status, last_error FROM outbound")
        assert row["status"] == "sending" and "took over 0.3 s" in row["last_error"]
        delivery.clock.advance(0.05)
        await delivery.drain()
    assert len(posts(fake)) == 1 and len(fake.messages()) == 1
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"


async def test_echoes_and_deliveries_in_one_conversation_do_not_deadlock(
    redis: aioredis.Redis, store: Store, topology: Topology
) -> None:
    """Persist (storing our echo) and deliver (recording its POST) mark the same replies of
    one conversation at the same moment, many times: both lock the conversation first, so
    no deadlock, and nothing either writes is lost."""
    await persist(redis, store, topology, "message_created__api_channel_incoming")
    count = 40
    async with store.pool.acquire() as conn:
        for n in range(count):
            await conn.execute(
                "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status,"
                " attempts, turn) VALUES ($1, 3, 1046, 'message', 'sending', 1, $2)",
                f"race-{n}",
                f"3:1046:{930000 + n}",
            )
    echoes = []
    for n in range(count):
        echo = chatwoot.payload("message_created__outgoing_agent_bot_echo")
        echo["id"], echo["content_attributes"] = 940000 + n, {"ext_ref": f"race-{n}"}
        echoes.append(echo)
    await feed(redis, topology, *echoes)
    persister = Persister(store, topology, bot_id=4)

    async def posted(n: int) -> None:
        async with store.transaction() as tx:
            await tx.mark_posted(f"race-{n}", chatwoot_message_id=940000 + n)

    entries = (await xrange(redis, topology.key("events")))[-count:]
    for n, (entry_id, fields) in enumerate(entries):
        entry = StreamEntry(id=entry_id, fields=fields, deliveries=1)
        await asyncio.gather(persister(entry), posted(n))
    replies = await rows(store, "SELECT status, chatwoot_message_id FROM outbound ORDER BY ref")
    assert all(r["status"] == "sent" for r in replies)
    assert sorted(r["chatwoot_message_id"] for r in replies) == list(range(940000, 940000 + count))
    [conv] = await rows(store, "SELECT answered_through FROM conversations")
    assert conv["answered_through"] == 930000 + count - 1


CREATE = "/api/v1/accounts/3/conversations"
OUTREACH = {"conversation": None, "inbox": 12, "source_id": "+15550001111", "contact": 77,
            "ref": "outreach"}  # fmt: skip


def creates(fake: Fake) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "POST" and r["path"] == CREATE]


async def test_a_conversation_created_ambiguously_is_found_not_created_again(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """Chatwoot created the conversation but the answer timed out: the next attempt finds it
    among the contact's conversations and posts into it: one conversation, one message."""
    fake.faults({"path": CREATE, "method": "POST", "delay_ms": 1500, "after": True,
                 "times": 1})  # fmt: skip
    async with ChatwootClient(
        fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN), timeout=0.5
    ) as client:
        delivery = deliver_runner(redis, store, topology, client)
        await reply(redis, topology, **OUTREACH)
        await deliver(delivery, rounds=3)
    assert len(creates(fake)) == 1
    [message] = fake.messages()
    [row] = await rows(store, "SELECT status, chatwoot_conversation_id FROM outbound")
    assert row == {"status": "sent", "chatwoot_conversation_id": message["conversation"]}


async def test_without_a_user_token_an_ambiguous_create_fails_clearly(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """With no way to look the conversation up, the reply fails with the reason rather than
    risk a second conversation."""
    fake.faults({"path": CREATE, "method": "POST", "delay_ms": 1500, "after": True,
                 "times": 1})  # fmt: skip
    await reply(redis, topology, **OUTREACH)
    await deliver(deliver_runner(redis, store, topology, client), rounds=3, step_s=0.4)
    assert len(creates(fake)) == 1 and fake.messages() == []
    [row] = await rows(store, "SELECT status, last_error FROM outbound")
    assert row["status"] == "failed" and "a second conversation" in row["last_error"]
    [(_, fields)] = await xrange(redis, topology.key("dead"))
    assert fields[b"reason"] == b"permanent" and fields[b"ref"] == b"outreach"


async def test_a_create_that_surely_failed_is_made_again(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """A create refused outright (a 500 before anything was saved) is simply retried."""
    fake.faults({"path": CREATE, "method": "POST", "status": 500, "times": 1})
    await reply(redis, topology, **OUTREACH)
    await deliver(deliver_runner(redis, store, topology, client), rounds=3)
    assert len(creates(fake)) == 2 and len(fake.messages()) == 1
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"


async def test_no_row_lock_is_held_while_chatwoot_is_asked(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake
) -> None:
    """While the deliverer waits on a slow message list, the reply's row stays writable: an
    echo recorded meanwhile does not wait for Chatwoot's answer."""
    fake.faults({"path": "messages", "method": "POST", "status": 502, "after": True, "times": 1})
    async with ChatwootClient(
        fake.url, Secret(BOT_TOKEN), user_token=Secret(USER_TOKEN), timeout=3.0
    ) as client:
        delivery = deliver_runner(redis, store, topology, client)
        await reply(redis, topology, ref="slow-list")
        await delivery.drain()
        fake.faults({"path": "messages", "method": "GET", "delay_ms": 1500})
        delivery.clock.advance(0.05)
        checking = asyncio.create_task(delivery.drain())
        for _ in range(200):
            if [r for r in fake.requests() if r["method"] == "GET"]:
                break  # the deliverer is now waiting on Chatwoot
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the deliverer never checked the message list")
        started = asyncio.get_running_loop().time()
        async with store.transaction() as tx:
            await tx.mark_posted("slow-list", chatwoot_message_id=fake.messages()[0]["id"])
        waited = asyncio.get_running_loop().time() - started
        await checking
    assert waited < 0.5
    assert len(posts(fake)) == 1
    [row] = await rows(store, "SELECT status FROM outbound")
    assert row["status"] == "sent"


async def test_a_reply_postgres_refuses_does_not_hold_up_its_batch(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """Replies to different conversations are recorded in a shared transaction: one that
    PostgreSQL refuses (a NUL in its text) fails alone, the others are posted once each."""
    delivery = deliver_runner(redis, store, topology, client)
    delivery.runner.partition = by_conversation  # the conversations' replies concurrently
    for n in range(6):
        content = "bad \x00 text" if n == 2 else f"reply {n}"
        await reply(redis, topology, ref=f"batch-{n}", conversation=2000 + n, content=content)
    await deliver(delivery)
    sent = await rows(store, "SELECT ref FROM outbound WHERE status = 'sent' ORDER BY ref")
    assert [r["ref"] for r in sent] == [f"batch-{n}" for n in (0, 1, 3, 4, 5)]
    created = [m for m in fake.messages() if m["conversation"] in range(2000, 2006)]
    assert sorted(m["content"] for m in created) == [f"reply {n}" for n in (0, 1, 3, 4, 5)]


async def test_replies_sent_together_are_all_counted(
    redis: aioredis.Redis, store: Store, topology: Topology, fake: Fake, client: ChatwootClient
) -> None:
    """`deliver.sent` counts every reply, those sent while an earlier count was under way
    added by its next round trip."""
    delivery = deliver_runner(redis, store, topology, client)
    delivery.runner.partition = by_conversation
    for n in range(12):
        await reply(redis, topology, ref=f"count-{n}", conversation=3000 + n)
    await deliver(delivery)
    counted: Any = await redis.hget(topology.key("metrics"), "deliver.sent")
    assert int(counted) == 12 == len(posts_to(fake, range(3000, 3012)))


def posts_to(fake: Fake, conversations: range) -> list[dict[str, Any]]:
    return [m for m in fake.messages() if m["conversation"] in conversations]
