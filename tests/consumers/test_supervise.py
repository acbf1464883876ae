"""No worker loop dies of one step: polling workers, the stream runner, and their supervisor."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from consumers.polling import PollingWorker
from consumers.runner import Runner, StreamEntry
from consumers.supervise import supervise, wait_after
from ingress.topology import GroupSpec, Topology
from tests.pipeline import xadd


class Flaky(PollingWorker):
    """Raises a plain exception on its first step, then does one item per step."""

    name = "flaky"
    poll_s = 0.01

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.worked = asyncio.Event()

    async def step(self) -> int:
        self.steps += 1
        if self.steps == 1:
            raise RuntimeError("a bug in one step")
        if self.steps >= 3:
            self.worked.set()
        return 0


async def test_a_polling_worker_outlives_an_exception() -> None:
    """A step raising a plain exception is logged and backed off; the loop goes on working."""
    worker = Flaky()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.worked.wait(), timeout=5)
    assert not task.done()
    worker.stop()
    await asyncio.wait_for(task, timeout=5)  # a clean stop, no exception
    assert worker.steps >= 3


async def test_a_runner_outlives_an_exception_outside_its_handler(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """An exception raised by the runner's own step (here its partition function) ends
    neither `run()` nor the entry: it is handled on the next pass."""
    seen: list[str] = []
    calls = 0

    def partition(entry: StreamEntry) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug outside the handler")
        return b""

    async def handler(entry: StreamEntry) -> None:
        seen.append(entry.id)

    spec = GroupSpec(stream="events", batch=10, block_ms=20, claim_idle_ms=50, max_deliveries=5)
    runner = Runner(
        redis,
        key=topology.key("events"),
        group="testers",
        spec=spec,
        dead_key=topology.key("dead"),
        handler=handler,
        consumer="c1",
        partition=partition,
        metrics_key=topology.key("metrics"),
    )
    entry_id = await xadd(redis, topology.key("events"), {"n": "1"})
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if seen or task.done():
            break
        await asyncio.sleep(0.02)
    runner.stop()
    await asyncio.wait_for(task, timeout=5)
    assert seen == [entry_id]
    assert await redis.hget(topology.key("metrics"), "testers.failed") == b"1"


class Stopper:
    """A worker whose run() ends by itself (or raises) a given number of times."""

    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = outcomes
        self.runs = 0
        self.stopped = False

    async def run(self) -> None:
        self.runs += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if not self.outcomes:
            self.stopped = True  # the last run: as if SIGTERM came meanwhile
        if outcome is not None:
            raise outcome

    def stop(self) -> None:
        self.stopped = True


async def test_supervise_restarts_a_worker_that_exits_or_raises() -> None:
    """A worker whose run() ends or raises before a stop is asked for is run again, after a
    growing wait; once stopping, supervise returns."""
    worker = Stopper([None, RuntimeError("boom"), None])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    await supervise("w", worker.run, stopping=lambda: worker.stopped, sleep=sleep)
    assert worker.runs == 3
    assert waits == [wait_after(1, base=0.5), wait_after(2, base=0.5)]
    assert waits[0] < waits[1]


async def test_supervise_keeps_the_other_workers_going() -> None:
    """One worker raising does not cancel the others running beside it."""
    done = asyncio.Event()

    async def healthy() -> None:
        await asyncio.sleep(0.05)
        done.set()

    failing = Stopper([RuntimeError("boom")])

    async def no_wait(_: float) -> None:
        return None

    await asyncio.wait_for(
        asyncio.gather(
            supervise("ok", healthy, stopping=done.is_set),
            supervise("bad", failing.run, stopping=lambda: failing.stopped, sleep=no_wait),
        ),
        timeout=5,
    )
    assert done.is_set()
