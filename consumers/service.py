"""Opens the connections, builds each requested group's worker, and runs them until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis
import structlog

from consumers import backfill, forward, push
from consumers.chatwoot import ChatwootClient
from consumers.counters import Counters
from consumers.deliver import Deliverer, Retrier
from consumers.errors import StoreError
from consumers.persist import Persister
from consumers.polling import PollingWorker
from consumers.retention import Retention
from consumers.runner import Runner, by_conversation
from consumers.store import Store, schema
from consumers.supervise import Worker, supervise
from consumers.turns import TurnEmitter
from consumers.unanswered import Unanswered
from ingress.connect import redis_client
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.topology import Topology

log = structlog.get_logger("consumers")

TURNS = "turns"
BACKFILL = "backfill"
FORWARD = forward.GROUP  # Meta webhooks to worker apps: runs only where Meta is configured


def group_names(topology: Topology) -> list[str]:
    """Every group a `consume` with no names runs: the stream groups, plus the turns,
    backfill and forward workers (the last two only where configured)."""
    return [*topology.groups, TURNS, BACKFILL, FORWARD]


def check_groups(topology: Topology, groups: Sequence[str]) -> None:
    known = group_names(topology)
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise ConfigError(
            [f"unknown group {g!r}: streams.yaml has {', '.join(known)}" for g in unknown]
        )


def redis_timeouts(topology: Topology) -> tuple[float, float]:
    """Socket timeouts for the consumers' Redis client. A read must outlast the longest
    XREADGROUP BLOCK (else every idle block would end as a timeout), yet a Redis that stops
    answering must end a call, as an outage waited out, rather than hang a worker forever."""
    longest_block_s = max((g.block_ms for g in topology.groups.values()), default=0) / 1000
    return longest_block_s + 5.0, 3.0  # (socket_timeout, socket_connect_timeout)


@contextlib.asynccontextmanager
async def connections(
    settings: Settings, topology: Topology
) -> AsyncIterator[tuple[aioredis.Redis, Store]]:
    settings.require("redis_url", "database_url")
    assert settings.redis_url is not None and settings.database_url is not None
    read_s, connect_s = redis_timeouts(topology)
    redis = redis_client(
        settings.redis_url, socket_timeout=read_s, socket_connect_timeout=connect_s
    )
    store = await _connect(settings.database_url)
    try:
        # On an unknown schema every entry would be dead-lettered: refuse, naming the fix.
        await schema.require_current(store)
        yield redis, store
    finally:
        await store.close()
        await redis.aclose()


@contextlib.asynccontextmanager
async def workers(
    settings: Settings,
    topology: Topology,
    groups: Sequence[str],
    redis: aioredis.Redis,
    store: Store,
) -> AsyncIterator[list[Worker]]:
    """The workers of `groups`, with the Chatwoot client open while they exist."""
    check_groups(topology, groups)
    counters = Counters(redis, metrics_key=topology.key("metrics"))
    async with contextlib.AsyncExitStack() as stack:
        # Every consume process also keeps memory bounded (idempotent, so any number may).
        built: list[Worker] = [Retention(store, redis, topology)]
        for group in groups:
            if group == TURNS:
                # Whoever emits turns also hands the unanswered ones to humans.
                built += [TurnEmitter(store, redis, topology), Unanswered(store, redis, topology)]
                continue
            if group == BACKFILL:
                backfiller = await stack.enter_async_context(
                    backfill.opened(settings, topology, redis, store)
                )
                built.extend([backfiller] if backfiller is not None else [])
                continue
            if group == FORWARD:
                forwarder = await stack.enter_async_context(
                    forward.opened(settings, topology, redis, store)
                )
                built.extend([forwarder] if forwarder is not None else [])
                continue
            if group == push.GROUP:
                built += await push.workers(settings, topology, redis, store, stack)
                continue
            spec = topology.groups[group]
            key = topology.key(spec.stream)
            if spec.stream == "outbound":
                settings.require("chatwoot_base_url", "chatwoot_api_token")
                assert settings.chatwoot_base_url and settings.chatwoot_api_token
                client = await stack.enter_async_context(
                    ChatwootClient(
                        settings.chatwoot_base_url,
                        settings.chatwoot_api_token,
                        user_token=settings.chatwoot_user_token,
                        timeout=topology.delivery.timeout_ms / 1000,
                        on_call=counters.chatwoot_call,
                    )
                )
                deliverer = Deliverer(
                    store, client, topology, redis=redis, base_url=settings.chatwoot_base_url
                )
                built.append(Retrier(deliverer))
                handler: Persister | Deliverer = deliverer
            else:
                handler = Persister(
                    store, topology, bot_id=settings.chatwoot_bot_id, counters=counters
                )
            built.append(
                Runner(
                    redis,
                    key=key,
                    group=group,
                    spec=spec,
                    dead_key=topology.key("dead"),
                    metrics_key=topology.key("metrics"),
                    partition=by_conversation,
                    handler=handler,
                    on_dead=handler.dead if isinstance(handler, Persister) else None,
                    batch_handler=handler.batch if isinstance(handler, Persister) else None,
                )
            )
        for worker in built:
            if isinstance(worker, PollingWorker):
                worker.counters = counters
        yield built


async def _connect(dsn: str, *, patience_s: float = 30.0) -> Store:
    """PostgreSQL may come up after us (a restart, a deploy): wait a while before giving up."""
    deadline = asyncio.get_running_loop().time() + patience_s
    wait = 0.5
    while True:
        try:
            return await Store.connect(dsn)
        except StoreError as exc:
            if not exc.outage or asyncio.get_running_loop().time() + wait > deadline:
                raise
            log.warning("store.unavailable", error=str(exc), retry_in=wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)


def _name(worker: Worker) -> str:
    return str(getattr(worker, "group", None) or getattr(worker, "name", type(worker).__name__))


class _Stop:
    """SIGTERM/SIGINT, caught from the very start: a signal during start-up ends it cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self.workers: list[Worker] = []

    def __call__(self) -> None:
        self.requested = True
        for worker in self.workers:
            worker.stop()


async def serve(settings: Settings, topology: Topology, groups: Sequence[str]) -> None:
    """Run the groups until SIGTERM or SIGINT; then each finishes and acks its batch."""
    stop = _Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    async with (
        connections(settings, topology) as (redis, store),
        workers(settings, topology, groups, redis, store) as running,
    ):
        stop.workers.extend(running)
        if stop.requested:
            return
        log.info("consumers.started", groups=list(groups))
        counters = Counters(redis, metrics_key=topology.key("metrics"))
        # Supervised: one worker's exit or exception restarts that worker, never ends the
        # others (a bare gather would cancel nothing but leave the process half-alive).
        await asyncio.gather(
            *(
                supervise(_name(w), w.run, stopping=lambda: stop.requested, counters=counters)
                for w in running
            )
        )
        log.info("consumers.stopped")
