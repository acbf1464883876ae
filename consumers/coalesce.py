"""Short transactions that concurrent callers would each open, shared instead (group commit).

The deliverer handles a read batch's conversations concurrently, and each reply opens short
transactions of its own (record it, claim its attempt): one BEGIN, COMMIT, pool round trip and
connection reset each, which is most of what a reply costs PostgreSQL. Here, a call made while
an earlier shared transaction is under way waits for it to end and then runs with every call
that queued meanwhile in one transaction; a call made while none is under way runs at once.
Nothing waits for a timer: alone, a call costs what it cost before.

Each call's work stays all-or-nothing: when the shared transaction fails (one call's statement
failed, a deadlock, an outage), every call of it runs again alone in a transaction of its own,
so that one bad call neither fails nor commits the others' work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

from consumers.store import Store, Tx

log = structlog.get_logger("coalesce")

T = TypeVar("T")
R = TypeVar("R")


class Coalesced(Generic[T, R]):
    def __init__(
        self, store: Store, work: Callable[[Tx, T], Awaitable[R]], *, most: int = 64
    ) -> None:
        self.store = store
        self.work = work
        self.most = most  # calls in one transaction at most: its locks and length stay small
        self._queued: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None  # the one draining the queue, if any

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append((item, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # The task copied the context of the call that started it: its log bindings (that
        # reply's ref) belong to none of the calls it runs.
        structlog.contextvars.clear_contextvars()
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queued:
                batch, self._queued = self._queued[: self.most], self._queued[self.most :]
                await self._run(batch)
        finally:
            self._task = None
            # Cancelled (the process stopping): no caller may wait for an answer forever.
            for _, future in batch + self._queued:
                if not future.done():
                    future.cancel()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if not future.cancelled()]
        if not live:
            return
        if len(live) > 1:
            try:
                async with self.store.transaction() as tx:
                    results = [await self.work(tx, item) for item, _ in live]
            except Exception as exc:  # noqa: BLE001 - each call is run alone instead
                log.info("coalesced.split", calls=len(live), error_class=type(exc).__name__)
            else:
                for (_, future), result in zip(live, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                return
        for item, future in live:
            try:
                async with self.store.transaction() as tx:
                    result = await self.work(tx, item)
            except Exception as exc:  # noqa: BLE001 - the caller's to handle, as if alone
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
