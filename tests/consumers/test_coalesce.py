"""Short transactions shared by concurrent callers (consumers.coalesce), on real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from consumers.coalesce import Coalesced
from consumers.errors import StoreError
from consumers.store import Store, Tx


async def ratio(tx: Tx, n: int) -> tuple[int, int]:
    """Its transaction's id, and 100 / n (n = 0 fails the statement, and the transaction)."""
    txid = int(await tx.conn.fetchval("SELECT txid_current()"))
    return txid, int(await tx.conn.fetchval("SELECT 100 / $1::int", n))


async def test_calls_made_meanwhile_share_one_transaction(store: Store) -> None:
    """Calls made together share a transaction; those made while it runs share the next."""
    shared = Coalesced(store, ratio)
    first = asyncio.gather(*(shared(n) for n in (1, 2)))
    await asyncio.sleep(0)  # the first transaction is under way
    answers = await asyncio.gather(first, asyncio.gather(*(shared(n) for n in (4, 5))))
    assert [value for _, value in answers[0] + answers[1]] == [100, 50, 25, 20]
    txids = [txid for txid, _ in answers[0] + answers[1]]
    assert txids[0] == txids[1] and txids[2] == txids[3] and txids[0] != txids[2]


async def test_a_failing_call_fails_alone(store: Store) -> None:
    """One call's failed statement neither fails nor loses the others' work: each runs
    again in a transaction of its own, and only the bad one raises."""
    shared = Coalesced(store, ratio)
    answers = await asyncio.gather(*(shared(n) for n in (1, 2, 0, 4)), return_exceptions=True)
    assert isinstance(answers[2], StoreError)
    good = [a for a in answers if not isinstance(a, BaseException)]
    assert [value for _, value in good] == [100, 50, 25]
    assert len({txid for txid, _ in good}) == 3  # after the split, each its own transaction


async def test_alone_a_call_is_not_held(store: Store) -> None:
    """Sequential calls each run at once in their own transaction (no timer, no batching)."""
    shared = Coalesced(store, ratio)
    first = await asyncio.wait_for(shared(1), timeout=5)
    second = await asyncio.wait_for(shared(2), timeout=5)
    assert first[0] != second[0]


async def test_a_transaction_holds_at_most_its_share(store: Store) -> None:
    shared = Coalesced(store, ratio, most=2)
    answers = await asyncio.gather(*(shared(n) for n in (1, 2, 4, 5, 10)))
    txids = [txid for txid, _ in answers]
    assert txids[0] == txids[1] and txids[2] == txids[3] and len(set(txids)) == 3


async def test_cancelled_drain_leaves_no_caller_waiting(store: Store) -> None:
    """The process stopping mid-transaction: every caller is told (cancelled), none hangs."""
    started = asyncio.Event()

    async def slow(tx: Tx, n: int) -> int:
        started.set()
        await asyncio.sleep(30)
        return n

    shared = Coalesced(store, slow)
    calls = [asyncio.create_task(shared(n)) for n in range(3)]
    await asyncio.wait_for(started.wait(), timeout=5)
    assert shared._task is not None
    shared._task.cancel()
    done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=5)
    assert all(isinstance(d, asyncio.CancelledError) for d in done)
    with pytest.raises(asyncio.CancelledError):
        await calls[0]
