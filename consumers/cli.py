"""The `switchboard` command: up, migrate, ingress, consume, streams, dlq, replay, backfill,
doctor, conversation, ops."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from consumers import appcli, backfill, dlq, doctor, metacli, ops, servers, service
from consumers.errors import StoreError
from consumers.local import LocalStack, migrate
from consumers.opsapp import commands as opsapp
from consumers.store import Store
from ingress import events, logs, topology
from ingress.connect import UNAVAILABLE, redis_client
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.topology import Topology


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="run the whole pipeline locally (embedded servers if no URLs)")
    up.add_argument("--demo", action="store_true", help="add a fake Chatwoot and the echo agent")
    sub.add_parser("migrate", help="bring the PostgreSQL schema to this version (idempotent)")
    ingress = sub.add_parser("ingress", help="serve the webhook ingress")
    ingress.add_argument("--host")
    ingress.add_argument("--port", type=int)
    consume = sub.add_parser("consume", help="run consumer groups (all when none is named)")
    consume.add_argument("groups", nargs="*", metavar="GROUP")
    sub.add_parser("streams", help="length, lag, pending and oldest pending age of each stream")
    sub.add_parser("doctor", help="check Redis, PostgreSQL, the schema, groups and Chatwoot")
    replay = sub.add_parser(
        "replay", help="re-publish webhooks from the audit trail to the events stream"
    )
    replay.add_argument(
        "--since", required=True, type=_when, help="ISO time, e.g. 2026-06-18T09:00Z"
    )
    replay.add_argument("--until", type=_when, help="ISO time (default: now)")
    replay.add_argument("--event", help="only this event, e.g. message_created")
    replay.add_argument("--outcome", choices=["applied", "duplicate", "ignored", "dead"])
    replay.add_argument("--limit", type=int, default=10_000)
    replay.add_argument("--dry-run", action="store_true", help="count, publish nothing")
    fill = sub.add_parser(
        "backfill", help="fetch from Chatwoot the messages its webhooks never brought"
    )
    fill.add_argument("--since", type=_when, help="scan from this ISO time, not the watermark")
    fill.add_argument(
        "--account", type=int, action="append", default=[], help="only this account (repeatable)"
    )
    dlq = sub.add_parser("dlq", help="inspect and act on dead-lettered entries")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = dlq_sub.add_parser("list", help="the oldest dead entries")
    listing.add_argument("--count", type=int, default=20)
    _selectors(listing)
    dlq_sub.add_parser("show", help="one entry in full").add_argument("id")
    for action, text in (
        ("replay", "put entries back: webhooks on their stream, failed replies in the outbox"),
        ("purge", "delete entries"),
    ):
        acting = dlq_sub.add_parser(action, help=f"{text} (one id, or a selection)")
        acting.add_argument("id", nargs="?")
        acting.add_argument("--all", action="store_true", help="every dead entry")
        _selectors(acting)
    opsapp.register(sub)

    appcli.register(sub)
    metacli.register(sub)
    return parser


def _selectors(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_when, help="dead-lettered at or after this ISO time")
    parser.add_argument("--reason", help="only this reason, e.g. permanent, max_attempts")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on every platform: asyncio's own loop then
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, taken = _settings(args.command)
        topo = topology.load(settings.streams_path)
        return _dispatch(args, settings, topo, taken)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"switchboard {args.command}: {problem}", file=sys.stderr)  # noqa: T201
        return 2
    except StoreError as exc:
        print(f"switchboard {args.command}: PostgreSQL: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    except UNAVAILABLE as exc:
        print(f"switchboard {args.command}: Redis: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _settings(command: str) -> tuple[Settings, dict[str, str]]:
    """The environment's settings; every command but `up` (which starts the servers) falls
    back on the servers `up` started when REDIS_URL and DATABASE_URL are unset."""
    settings = Settings.from_env()
    if command == "up":
        return settings, {}
    return servers.apply(settings)


def _dispatch(
    args: argparse.Namespace, settings: Settings, topo: Topology, taken: dict[str, str]
) -> int:
    logs.configure(settings.log_format, settings.log_level)
    if args.command == "up":
        return LocalStack(settings, topo, demo=args.demo).run()
    if args.command == "ingress":
        # The ingress is its own package; run it as `python -m ingress` in this process's place.
        argv = [sys.executable, "-m", "ingress"]
        argv += ["--host", args.host] if args.host else []
        argv += ["--port", str(args.port)] if args.port else []
        os.execve(sys.executable, argv, os.environ | taken)
    if args.command == "consume":
        groups = args.groups or service.group_names(topo)
        service.check_groups(topo, groups)
        # uvloop when installed (uvicorn[standard] brings it): the consumers' time goes to
        # socket round trips, which it makes far cheaper than asyncio's selector loop.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(service.serve(settings, topo, groups))
        return 0
    if args.command == "migrate":
        settings.require("database_url")
        assert settings.database_url is not None
        print(f"switchboard migrate: {asyncio.run(migrate(settings.database_url))}")  # noqa: T201
        return 0
    if args.command == "doctor":
        return asyncio.run(doctor.run(settings, topo))
    if args.command == "replay":
        return asyncio.run(_replay(args, settings, topo))
    if args.command == "dlq" and args.action == "replay":
        return asyncio.run(_dlq_replay(args, settings, topo))
    if args.command == "backfill":
        return asyncio.run(_backfill(args, settings, topo))
    if args.command in opsapp.NAMES:
        return opsapp.run(args, settings, topo)

    if args.command == "apps":
        return asyncio.run(appcli.run(args, settings))
    if args.command == "meta":
        return asyncio.run(metacli.run(args, settings))
    return asyncio.run(_with_redis(settings, lambda redis: _redis_command(args, redis, topo)))


async def _with_redis(
    settings: Settings, command: Callable[[aioredis.Redis], Awaitable[int]]
) -> int:
    settings.require("redis_url")
    assert settings.redis_url is not None
    redis = redis_client(settings.redis_url)
    try:
        return await command(redis)
    except UNAVAILABLE as exc:
        print(f"switchboard: Redis: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        await redis.aclose()


async def _redis_command(args: argparse.Namespace, redis: aioredis.Redis, topo: Topology) -> int:
    out = sys.stdout
    if args.command == "streams":
        out.write(ops.render(await ops.streams(redis, topo)) + "\n")
        return 0
    if args.action == "list":
        selection = dlq.Selection(since=args.since, reason=args.reason)
        async for entry_id, dead in dlq.select(redis, topo, selection, limit=args.count):
            out.write(
                f"{entry_id}  {dead.stream}/{dead.group} {dead.id} "
                f"x{dead.deliveries if dead.deliveries is not None else '-'} "
                f"{dead.reason}: {dead.error[:120]}\n"
            )
        return 0
    if args.action == "show":
        async for entry_id, dead in dlq.select(redis, topo, dlq.Selection(id=args.id)):
            out.write(_shown(entry_id, dead))
            return 0
        out.write(f"no dead entry {args.id}\n")
        return 1
    chosen = _selection(args)
    if chosen is None:
        return 2
    out.write(f"purged {await dlq.purge(redis, topo, chosen)}\n")
    return 0


def _shown(entry_id: str, dead: events.DeadEntry) -> str:
    lines = [f"dead entry: {entry_id}"]
    lines += [f"{name}: {getattr(dead, name) if getattr(dead, name) is not None else ''}"
              for name in events.DEAD_META]  # fmt: skip
    lines += [f"{events.shown(k)}: {v.decode(errors='replace')}" for k, v in dead.original.items()]
    return "\n".join(lines) + "\n"


def _selection(args: argparse.Namespace) -> dlq.Selection | None:
    """One id, or --all / --since / --reason; None (and a line saying so) when neither."""
    bulk = args.all or args.since is not None or args.reason is not None
    if (args.id is None) == (not bulk):
        sys.stdout.write("name an entry id, or select with --all, --since or --reason\n")
        return None
    return dlq.Selection(id=args.id, since=args.since, reason=args.reason)


async def _dlq_replay(args: argparse.Namespace, settings: Settings, topo: Topology) -> int:
    """A replayed reply is queued again in the outbox, hence PostgreSQL as well as Redis."""
    selection = _selection(args)
    if selection is None:
        return 2
    settings.require("redis_url", "database_url")
    assert settings.redis_url is not None and settings.database_url is not None
    redis = redis_client(settings.redis_url)
    store = await Store.connect(settings.database_url, max_size=1)
    counts: Counter[dlq.Outcome] = Counter()
    last: dlq.Replayed | None = None
    try:
        replayer = dlq.Replayer(redis, store, topo)
        async for entry_id, dead in dlq.select(redis, topo, selection):
            last = await replayer.replay(entry_id, dead)
            counts[last.outcome] += 1
    finally:
        await store.close()
        await redis.aclose()
    out = sys.stdout
    if args.id is not None:
        out.write(_replayed_one(args.id, last))
        return 0 if last is not None else 1
    out.write(
        f"replayed {counts.total()}: {counts[dlq.Outcome.REPUBLISHED]} re-published, "
        f"{counts[dlq.Outcome.REQUEUED]} replies queued again, "
        f"{counts[dlq.Outcome.LEFT]} replies left as they were"
        + (f", {n} pushes queued again" if (n := counts[dlq.Outcome.REPUSHED]) else "")
        + "\n"
    )
    return 0


def _replayed_one(entry_id: str, done: dlq.Replayed | None) -> str:
    if done is None:
        return f"no dead entry {entry_id}\n"
    if done.outcome is dlq.Outcome.REPUBLISHED:
        return f"replayed as {done.detail}\n"
    if done.outcome is dlq.Outcome.REPUSHED:
        return f"{done.detail} queued again: the push group sends it\n"
    if done.outcome is dlq.Outcome.REQUEUED:
        return f"reply {done.detail} queued again: the deliver group sends it\n"
    return f"reply {done.detail}: nothing to send\n"


def _when(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def _replay(args: argparse.Namespace, settings: Settings, topo: Topology) -> int:
    """Persist is idempotent (message ids, versions), so replaying what was applied is
    harmless; it is how webhooks a fixed bug once failed are applied after all."""
    settings.require("redis_url", "database_url")
    assert settings.redis_url is not None and settings.database_url is not None
    store = await Store.connect(settings.database_url, max_size=1)
    try:
        async with store.transaction() as tx:
            found = await tx.audited(
                since=args.since,
                until=args.until or dt.datetime.now(dt.UTC),
                event=args.event,
                outcome=args.outcome,
                limit=args.limit,
            )
    finally:
        await store.close()
    if not args.dry_run and found:
        redis = redis_client(settings.redis_url)
        try:
            for entry in found:
                await redis.xadd(topo.key("events"), events.encode(entry))  # type: ignore[arg-type]
        finally:
            await redis.aclose()
    verb = "would replay" if args.dry_run else "replayed"
    sys.stdout.write(f"{verb} {len(found)} webhooks to {topo.key('events')}\n")
    return 0


async def _backfill(args: argparse.Namespace, settings: Settings, topo: Topology) -> int:
    settings.require("chatwoot_base_url", "chatwoot_user_token")
    async with (
        service.connections(settings, topo) as (redis, store),
        backfill.opened(settings, topo, redis, store) as worker,
    ):
        assert worker is not None
        since = args.since.timestamp() if args.since else None
        report = await worker.round(since=since, accounts=args.account)
    sys.stdout.write(f"backfill: {report.line()} to {topo.key('events')}\n")
    return 1 if report.failed else 0
