"""Keeping worker loops alive: no exception from one step, one entry or one call ends a process.

A step that fails is logged (`worker.failed`, traceback without frame locals), counted in
the metrics hash, and the loop carries on after a backoff; a worker whose `run()` ends when
nobody asked it to stop is restarted, so one group's trouble never takes the others down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from consumers.counters import Counters

log = structlog.get_logger("supervise")

MAX_WAIT_S = 5.0


class Worker(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


def wait_after(failures: int, *, base: float = 0.1) -> float:
    """Seconds to back off after `failures` consecutive failures: doubling, capped."""
    doubled: float = base * 2.0 ** max(failures - 1, 0)
    return min(MAX_WAIT_S, doubled)


async def step_failed(
    group: str, exc: BaseException, counters: Counters | None, *, failures: int
) -> None:
    """Log and count a failed step. The class and message say what; the traceback says where
    (rendered without frame locals by ingress/logs.py: they may hold tokens or bodies)."""
    log.error(
        "worker.failed",
        group=group,
        error_class=type(exc).__name__,
        error=str(exc)[:500],
        failures=failures,
        exc_info=exc,
    )
    if counters is not None:
        await counters.add(f"{group}.failed")


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    stopping: Callable[[], bool],
    counters: Counters | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run `run()` until a stop is requested, restarting it (with backoff) whenever it ends
    or raises before that: a worker's loop should never end by itself, and if it does, the
    other workers of the process must not notice."""
    failures = 0
    while True:
        try:
            await run()
        except Exception as exc:  # noqa: BLE001 - logged, counted, restarted just below
            failures += 1
            await step_failed(name, exc, counters, failures=failures)
        else:
            if stopping():
                return
            failures += 1
            log.error("worker.exited", group=name, failures=failures)
            if counters is not None:
                await counters.add(f"{name}.restarted")
        if stopping():
            return
        wait = wait_after(failures, base=0.5)
        log.warning("worker.restarting", group=name, wait=wait)
        await sleep(wait)
