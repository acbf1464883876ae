"""The ops app's JSON views (`/api/...`)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from consumers import dlq, ops
from consumers.opsapp import params, queries, reads
from consumers.opsapp.context import context
from consumers.store.overview import OverviewSQL
from ingress import events


def json(value: Any, status: int = 200) -> Response:
    return Response(
        msgspec.json.encode(value),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


async def health(request: Request) -> Response:
    ctx = context(request)
    return json(await reads.health(ctx.redis, ctx.store, ctx.topology, ctx.clock()))


async def streams(request: Request) -> Response:
    ctx = context(request)
    return json(await ops.streams(ctx.redis, ctx.topology))


async def webhooks(request: Request) -> Response:
    chosen = queries.webhooks(request.query_params)
    async with context(request).store.transaction() as tx:
        return json(await OverviewSQL(tx.conn).webhooks(chosen))


async def conversations(request: Request) -> Response:
    chosen = queries.conversations(request.query_params)
    async with context(request).store.transaction() as tx:
        return json(await OverviewSQL(tx.conn).conversations(chosen))


async def conversation(request: Request) -> Response:
    ctx = context(request)
    account, number = path_ids(request)
    found = await reads.conversation(ctx.store, ctx.redis, ctx.topology, account, number)
    if found is None:
        return json({"error": f"no conversation {account}/{number}"}, 404)
    return json(found)


async def messages_per_hour(request: Request) -> Response:
    ctx = context(request)
    hours = queries.hours(request.query_params)
    async with ctx.store.transaction() as tx:
        return json(await OverviewSQL(tx.conn).messages_per_hour(ctx.clock(), hours))


async def dead_list(request: Request) -> Response:
    ctx = context(request)
    selection, limit = queries.dead(request.query_params)
    found = [
        {"entry": entry_id} | {name: getattr(d, name) for name in events.DEAD_META}
        async for entry_id, d in dlq.select(ctx.redis, ctx.topology, selection, limit=limit)
    ]
    return json(found)


async def dead_show(request: Request) -> Response:
    ctx = context(request)
    entry_id = params.entry_id(request.path_params["entry"])
    async for _, d in dlq.select(ctx.redis, ctx.topology, dlq.Selection(id=entry_id)):
        shown = {name: getattr(d, name) for name in events.DEAD_META}
        original = {events.shown(k): v.decode(errors="replace") for k, v in d.original.items()}
        return json({"entry": entry_id} | shown | {"original": original})
    return json({"error": f"no dead entry {entry_id}"}, 404)


async def dead_replay(request: Request) -> Response:
    ctx = context(request)
    if not ctx.guard.api_action_allowed(request):
        return refused()
    entry_id = params.entry_id(request.path_params["entry"])
    replayer = dlq.Replayer(ctx.redis, ctx.store, ctx.topology, clock=ctx.clock)
    async for _, d in dlq.select(ctx.redis, ctx.topology, dlq.Selection(id=entry_id)):
        done = await replayer.replay(entry_id, d)
        return json({"entry": entry_id, "outcome": done.outcome, "detail": done.detail})
    return json({"error": f"no dead entry {entry_id}"}, 404)


async def dead_purge(request: Request) -> Response:
    ctx = context(request)
    if not ctx.guard.api_action_allowed(request):
        return refused()
    entry_id = params.entry_id(request.path_params["entry"])
    removed = await dlq.purge(ctx.redis, ctx.topology, dlq.Selection(id=entry_id))
    if not removed:
        return json({"error": f"no dead entry {entry_id}"}, 404)
    return json({"entry": entry_id, "purged": removed})


def refused() -> Response:
    return json({"error": "actions need the Authorization: Bearer header"}, 403)


def path_ids(request: Request) -> tuple[int, int]:
    found = []
    for name in ("account", "conversation"):
        value = params.integer(request.path_params, name)
        if value is None:
            raise params.BadParameter(name, "missing")
        found.append(value)
    return found[0], found[1]
