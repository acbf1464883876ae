"""Workers that poll PostgreSQL for due work (turns, reply retries) rather than read a stream."""

from __future__ import annotations

import asyncio

import structlog

from consumers import faults, supervise
from consumers.counters import Counters
from consumers.faults import Fault
from consumers.runner import redis_fault
from ingress.connect import UNAVAILABLE

log = structlog.get_logger("polling")


class PollingWorker:
    """Runs `step()` until stopped: again at once while it finds a full batch of work, else
    after `poll_s`. No exception ends the loop: an outage (PostgreSQL, Redis) is logged and
    waited out; any other failure is logged with its traceback, counted, and backed off."""

    name = "worker"
    batch = 50
    poll_s = 0.25
    # Set by whoever wires the worker (service.py) to count failures in the metrics hash.
    counters: Counters | None = None

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    async def step(self) -> int:
        """Do the work due now; how many items were done."""
        raise NotImplementedError

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        log.info("runner.started", group=self.name)
        failures = 0
        while not self._stopping.is_set():
            wait = self.poll_s
            try:
                done = await self.step()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - logged and backed off just below
                failures += 1
                done = 0
                wait = max(wait, supervise.wait_after(failures))
                await self._failed(exc, failures)
            finally:
                # What a step bound (a reply's ref, a turn) belongs to its own lines only:
                # never to the next step's, nor to `runner.stopped`.
                structlog.contextvars.clear_contextvars()
            if done < self.batch:
                await self.pause(wait)
        log.info("runner.stopped", group=self.name)

    async def pause(self, seconds: float) -> None:
        """Wait `seconds` before the next step, or less when stopped; a worker with a better
        signal of due work (a notification, a known due time) waits less."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _failed(self, exc: Exception, failures: int) -> None:
        if isinstance(exc, UNAVAILABLE):
            outage = redis_fault(exc) is Fault.OUTAGE
        else:
            outage = faults.of_error(exc) is Fault.OUTAGE
        if outage:
            log.warning("worker.unavailable", group=self.name, error=str(exc))
            return
        await supervise.step_failed(self.name, exc, self.counters, failures=failures)

    async def drain(self) -> int:
        """Do everything due now, then return how much was done (for tests)."""
        total = 0
        while done := await self.step():
            total += done
        return total
