"""Workers that poll PostgreSQL for due work (turns, reply retries) rather than read a stream."""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from consumers.errors import StoreError

log = structlog.get_logger("polling")


class PollingWorker:
    """Runs `step()` until stopped: again at once while it finds a full batch of work, else
    after `poll_s`. A store or Redis outage is logged and waited out, never fatal."""

    name = "worker"
    batch = 50
    poll_s = 0.25

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    async def step(self) -> int:
        """Do the work due now; how many items were done."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        log.info("runner.started", group=self.name)
        while not self._stopping.is_set():
            try:
                done = await self.step()
            except (StoreError, RedisError) as exc:
                log.warning("worker.unavailable", group=self.name, error=str(exc))
                done = 0
            if done < self.batch:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.poll_s)
                except TimeoutError:
                    pass
        log.info("runner.stopped", group=self.name)

    async def drain(self) -> int:
        """Do everything due now, then return how much was done (for tests)."""
        total = 0
        while done := await self.step():
            total += done
        return total
