"""The set-based fast path of persist leaves exactly the rows the per-entry path leaves."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from consumers.decisions import Dead
from consumers.persist import Persister
from consumers.runner import StreamEntry
from consumers.store import Store
from ingress import events
from ingress.topology import Topology
from tests import chatwoot
from tests.conftest import TABLES
from tests.consumers.test_convergence import HISTORY, RECEIPT_REF

NOW = dt.datetime(2026, 6, 18, 10, 0, tzinfo=dt.UTC)
RECEIVED = 1781790000000  # after every snapshot's `updated_at` (one dated ahead is ignored)

# Every column but those set to now() (a transaction's start: it differs between two runs).
SNAPSHOT = {
    "conversations": "SELECT account_id, chatwoot_conversation_id, inbox_id, channel, contact_id,"
    " identity, status, assignee_type, assignee_id, handler, human_since, bot_since, team_id,"
    " labels, active, ended_at IS NULL AS open_ended, version, last_inbound_message_id,"
    " burst_started_at, pending_count, turn_due_at, emitted_through, answered_through,"
    " answer_due_at, answer_through, answer_holds FROM conversations ORDER BY 1, 2",
    "messages": "SELECT account_id, chatwoot_message_id, chatwoot_conversation_id, direction,"
    " sender_kind, sender_id, private, message_type, content, content_type, attachments::text,"
    " status, created_at, ext_ref, deleted, version FROM messages ORDER BY 1, 2",
    "contacts": "SELECT account_id, chatwoot_contact_id, name, email, phone, identifier, version"
    " FROM contacts ORDER BY 1, 2",
    "outbound": "SELECT ref, status, chatwoot_message_id FROM outbound ORDER BY 1",
    "webhook_events": "SELECT stream_id, delivery_id, received_at, source, event, account_id,"
    " chatwoot_conversation_id, signed, outcome, detail, body FROM webhook_events ORDER BY 1",
}


def variants() -> list[dict[str, Any]]:
    """The convergence history, and what makes the fast path's cases: a burst of customer
    messages in one conversation, an edit of one (newer and older), a duplicate with a newer
    conversation snapshot, a message of a conversation nobody stored, a broken body."""
    burst = []
    for n in range(4):
        data = chatwoot.payload("message_created__whatsapp_incoming_phone")
        data.update(id=918400 + n, content=f"burst {n}")
        data["conversation"]["updated_at"] += n
        burst.append(data)
    newer = copy.deepcopy(burst[1])
    newer.update(event="message_updated", content="edited later")
    newer["conversation"]["messages"][0].update(id=918401, updated_at="2026-06-18T11:00:00.000Z")
    older = copy.deepcopy(newer)
    older["content"] = "an older edit"
    older["conversation"]["messages"][0]["updated_at"] = "2026-06-18T08:00:00.000Z"
    again = copy.deepcopy(burst[2])
    again["conversation"]["updated_at"] += 100
    again["conversation"]["status"] = "pending"
    stranger = copy.deepcopy(burst[0])
    stranger["id"], stranger["conversation"]["id"] = 918500, 1099
    # The widget visitor of 1042 tells their email: a newer snapshot with another identity
    # (the conversation keeps the one it was first seen with) and no inbox (the known one stays).
    identified = chatwoot.payload("message_created__webwidget_incoming_no_email")
    identified["id"] = 918700
    identified["conversation"]["updated_at"] += 50
    identified["conversation"]["meta"]["sender"]["email"] = "River@Example.com"
    del identified["conversation"]["inbox_id"]
    broken = copy.deepcopy(burst[3])
    broken["created_at"] = "1900-01-01T00:00:00Z"  # outside what persist stores: dead
    return [*HISTORY, *burst, newer, older, again, stranger, identified, broken]


VARIANTS = variants()
BODIES = [chatwoot.rails_json(p) for p in VARIANTS]


def entries(order: list[int], *, start: int = 0) -> list[StreamEntry]:
    """`order` as stream entries; a negative index is a redelivery of the entry before it
    (the same stream id)."""
    out: list[StreamEntry] = []
    for n, index in enumerate(order):
        if index < 0 and out:
            out.append(out[-1])
            continue
        index = abs(index)
        entry = events.EventEntry(
            event=VARIANTS[index]["event"], delivery=f"d{index}", account=3,
            received_at=RECEIVED + index, signed=True, body=BODIES[index],
        )  # fmt: skip
        fields = {k.encode(): v for k, v in events.encode(entry).items()}
        out.append(StreamEntry(id=f"{start + n + 1}-0", fields=fields, deliveries=1))
    return out


async def apply(
    store: Store, topology: Topology, warm: list[int], order: list[int], *, fast: bool, hold: int
) -> tuple[dict[str, Any], list[bool], int]:
    """From the same start (`warm` applied one by one), `order` as one batch of one lane; then,
    as the runner does, each entry the batch left one by one (a failure recorded dead). The
    rows, the batch's flags, and how many entries the fast path took."""
    async with store.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        await conn.execute(
            "INSERT INTO outbound (ref, account_id, chatwoot_conversation_id, kind, status) "
            "VALUES ($1, 3, 1044, 'message', 'sending')",
            RECEIPT_REF,
        )
    single = Persister(store, topology, bot_id=4, clock=lambda: NOW, fast=False)
    for entry in entries(warm, start=10_000):
        await single(entry)
    persist = Persister(store, topology, bot_id=4, clock=lambda: NOW, lanes=1, hold=hold, fast=fast)
    batch = entries(order)
    done = await persist.batch(batch)
    for entry, ok in zip(batch, done, strict=True):
        if not ok:
            try:
                await persist(entry)
            except Exception as exc:  # noqa: BLE001 - recorded as the runner would
                await persist.dead(entry, Dead(reason="permanent", error=str(exc)[:40]))
    async with store.pool.acquire() as conn:
        rows = {name: [dict(r) for r in await conn.fetch(sql)] for name, sql in SNAPSHOT.items()}
    return rows, done, persist.taken_fast


async def same(
    store: Store, topology: Topology, warm: list[int], order: list[int], hold: int
) -> int:
    fast, fast_done, taken = await apply(store, topology, warm, order, fast=True, hold=hold)
    slow, slow_done, _ = await apply(store, topology, warm, order, fast=False, hold=hold)
    for table in SNAPSHOT:
        assert fast[table] == slow[table], table
    assert fast_done == slow_done
    return taken


EVERY = list(range(len(VARIANTS)))


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    """A start (a prefix of the history, in order), then any order of any of the webhooks
    with duplicates and redeliveries, in chunks of any size."""
    warm = EVERY[: draw(st.integers(0, len(HISTORY)))]
    picked = draw(st.lists(st.sampled_from(EVERY + [-1]), min_size=1, max_size=40))
    return warm, picked, draw(st.sampled_from([1, 3, 8, 64]))


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=sequences())
async def test_the_fast_path_leaves_the_rows_of_the_per_entry_path(
    case: tuple[list[int], list[int], int], store: Store, topology: Topology
) -> None:
    """Any sequence of webhooks (messages, edits, receipts, echoes, lifecycle events,
    contacts, duplicates, redeliveries, out-of-order versions, broken ones) from any start:
    every table's rows, every outcome and every entry's flag are those of the per-entry
    path."""
    warm, order, hold = case
    await same(store, topology, warm, order, hold)


BURST = [VARIANTS.index(p) for p in VARIANTS[len(HISTORY) : len(HISTORY) + 4]]
NEWER, OLDER, AGAIN, STRANGER, IDENTIFIED, BROKEN = range(len(HISTORY) + 4, len(VARIANTS))


async def test_a_burst_in_a_known_conversation_takes_the_fast_path(
    store: Store, topology: Topology
) -> None:
    """The common case, with the edits and a duplicate mixed in, the same rows as one by one,
    and every entry but the first (it creates the conversation) taken set-based."""
    order = [*BURST, NEWER, OLDER, AGAIN, -1, BURST[0]]
    assert await same(store, topology, [], order, hold=64) == len(order) - 1
    widget = VARIANTS.index(chatwoot.payload("message_created__webwidget_incoming_no_email"))
    assert await same(store, topology, [widget], [IDENTIFIED], hold=64) == 1


async def test_unusual_entries_in_a_run_go_one_by_one_in_stream_order(
    store: Store, topology: Topology
) -> None:
    """A new conversation and a broken webhook between fast entries: the run stops at each,
    it is applied (or dead-lettered) alone, and the run goes on after it, rows as ever."""
    order = [*BURST[:2], STRANGER, BURST[2], BROKEN, BURST[3], 0, 1, 6, 7]
    taken = await same(store, topology, [0, *BURST[:1]], order, hold=64)
    assert 0 < taken < len(order)
