"""The ops page: server-rendered HTML over the same reads as the JSON API, readable without
JavaScript (filters are GET forms, the replay is a confirm page with a POST form)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from consumers import dlq, ops
from consumers.opsapp import params, queries, reads
from consumers.opsapp.api import path_ids
from consumers.opsapp.context import HANDLERS, OUTCOMES, STATUSES, context
from consumers.opsapp.guard import COOKIE
from consumers.opsapp.html import Safe, field, hidden, join, link, page, table, tag
from consumers.store.overview import OverviewSQL
from consumers.timeline import Timeline


async def health(request: Request) -> Response:
    ctx = context(request)
    now = ctx.clock()
    found = await reads.health(ctx.redis, ctx.store, ctx.topology, now)
    dead = tag("p", join(["Dead letters: ",
                          tag("strong", found.dead, class_="bad" if found.dead else "ok"), " ",
                          link("/dead", "list")]))  # fmt: skip
    body = join([tag("h2", "Streams"), _streams(found.streams), dead,
                 tag("h2", "Webhooks per minute, last hour"), _per_minute(found),
                 tag("h2", "Reply latency, last hour"), _latency(found.latency),
                 tag("h2", "Counters"),
                 table(("name", "count"), found.counters.items(), id_="counters")])  # fmt: skip
    return page("Pipeline health", body)


def _streams(statuses: list[ops.StreamStatus]) -> Safe:
    rows: list[tuple[object, ...]] = []
    for s in statuses:
        if not s.groups:
            rows.append((s.key, s.length, "-", "", "", "", ""))
        for g in s.groups:
            lag = g.lag if g.lag is not None else f">{ops.LAG_SCAN_LIMIT}"
            oldest = f"{g.oldest_pending_s}s" if g.oldest_pending_s is not None else "-"
            rows.append((s.key, s.length, g.name, g.consumers, lag, g.pending, oldest))
    headers = ("stream", "length", "group", "consumers", "lag", "pending", "oldest pending")
    return table(headers, rows, id_="streams")


def _per_minute(found: reads.Health) -> Safe:
    counts: dict[Any, dict[str, int]] = defaultdict(dict)
    for row in found.webhooks_per_minute:
        counts[row["minute"]][row["outcome"]] = row["webhooks"]
    if not counts:
        return tag("p", "No webhooks in the last hour.", class_="note")
    outcomes = sorted(OUTCOMES)
    rows = [(minute, *(by.get(o, 0) for o in outcomes)) for minute, by in sorted(counts.items())]
    return table(("minute", *outcomes), rows, id_="webhooks-per-minute")


def _latency(latency: dict[str, Any]) -> Safe:
    posted = latency["queued_to_posted"]
    rows: list[tuple[object, ...]] = [("replies posted", posted.get("replies", 0))]
    for name in ("p50_s", "p95_s", "max_s"):
        value = posted.get(name)
        shown = f"{value:.3f} s" if value is not None else "-"
        rows.append((f"queued → posted {name[:-2]}", shown))
    rows += list(latency["metrics"].items())
    return table(("", "value"), rows, id_="latency")


async def conversations(request: Request) -> Response:
    query = request.query_params
    chosen = queries.conversations(query)
    async with context(request).store.transaction() as tx:
        found = await OverviewSQL(tx.conn).conversations(chosen)
    form = tag("form", join([
        field("account", query.get("account", ""), label="Account"),
        field("inbox", query.get("inbox", ""), label="Inbox"),
        field("status", chosen.status, label="Status", options=sorted(STATUSES)),
        field("handler", chosen.handler, label="Handler", options=sorted(HANDLERS)),
        field("q", chosen.search or "", label="Contact"),
        tag("button", "Filter", type="submit"),
    ]), method="get", action="/conversations", class_="filters")  # fmt: skip
    rows = [
        (link(f"/conversations/{c['account_id']}/{c['chatwoot_conversation_id']}",
              f"{c['account_id']}/{c['chatwoot_conversation_id']}"),
         c["inbox_id"], c["channel"], c["status"], c["handler"], _contact(c), c["updated_at"])
        for c in found
    ]  # fmt: skip
    headers = ("conversation", "inbox", "channel", "status", "handler", "contact", "updated")
    return page("Conversations", join([form, table(headers, rows, id_="conversations")]))


def _contact(row: dict[str, Any]) -> str:
    names = ("contact_name", "contact_email", "contact_phone", "contact_identifier")
    return " · ".join(str(row[n]) for n in names if row.get(n))


async def conversation(request: Request) -> Response:
    ctx = context(request)
    account, number = path_ids(request)
    found = await reads.conversation(ctx.store, ctx.redis, ctx.topology, account, number)
    if found is None:
        return page("Not found", tag("p", f"No conversation {account}/{number}."), status=404)
    return page(f"Conversation {account}/{number}", _timeline(found))


def _timeline(t: Timeline) -> Safe:
    contact = ", ".join(str(v) for v in (t.contact or {}).values() if v) or "-"
    facts = table(("", ""), [("inbox", f"{t.inbox} {t.channel or ''}"), ("status", t.status),
                             ("handled by", t.handler), ("assignee", t.assignee or "-"),
                             ("contact", contact)], id_="facts")  # fmt: skip
    rows = [(e.at, e.kind, e.summary) for e in t.events]
    return join([facts, table(("time", "what", ""), rows, id_="timeline")])


async def webhooks(request: Request) -> Response:
    query = request.query_params
    chosen = queries.webhooks(query)
    async with context(request).store.transaction() as tx:
        found = await OverviewSQL(tx.conn).webhooks(chosen)
    form = tag("form", join([
        field("outcome", chosen.outcome, label="Outcome", options=sorted(OUTCOMES)),
        field("event", chosen.event or "", label="Event"),
        field("since", query.get("since", ""), label="Since"),
        tag("button", "Filter", type="submit"),
    ]), method="get", action="/webhooks", class_="filters")  # fmt: skip
    rows = [
        (w["received_at"], w["event"], w["outcome"], w["detail"], w["delivery_id"],
         link(f"/conversations/{w['account_id']}/{w['chatwoot_conversation_id']}",
              f"{w['account_id']}/{w['chatwoot_conversation_id']}")
         if w["chatwoot_conversation_id"] is not None else "-")
        for w in found
    ]  # fmt: skip
    headers = ("received", "event", "outcome", "detail", "delivery", "conversation")
    return page("Recent webhooks", join([form, table(headers, rows, id_="webhooks")]))


async def dead(request: Request) -> Response:
    ctx = context(request)
    selection, limit = queries.dead(request.query_params)
    rows = [
        (entry_id, f"{d.stream}/{d.group}", d.id, d.deliveries, d.reason, d.error[:200],
         link(f"/dead/{entry_id}/replay", "Replay"))
        async for entry_id, d in dlq.select(ctx.redis, ctx.topology, selection, limit=limit)
    ]  # fmt: skip
    done = request.query_params.get("done")
    note = tag("p", done, class_="ok", id="done") if done else Safe("")
    headers = ("entry", "from", "original id", "deliveries", "reason", "error", "")
    return page("Dead letters", join([note, table(headers, rows, id_="dead")]))


async def replay_confirm(request: Request) -> Response:
    ctx = context(request)
    entry_id = params.entry_id(request.path_params["entry"])
    async for _, d in dlq.select(ctx.redis, ctx.topology, dlq.Selection(id=entry_id)):
        form = tag("form", join([
            hidden("form_token", ctx.guard.form_token(request)),
            tag("button", "Replay", type="submit", id="confirm"), " ", link("/dead", "Cancel"),
        ]), method="post", action=f"/dead/{entry_id}/replay")  # fmt: skip
        what = tag("p", f"Replay {entry_id} ({d.stream}/{d.group}, {d.reason}: {d.error[:200]})?")
        return page("Replay a dead letter", join([what, form]))
    return page("Not found", tag("p", f"No dead entry {entry_id}."), status=404)


async def replay(request: Request) -> Response:
    ctx = context(request)
    entry_id = params.entry_id(request.path_params["entry"])
    offered = (await params.form(request)).get("form_token", "")
    if not ctx.guard.form_allowed(request, offered):
        return page("Refused", tag("p", "This form is stale or from another site."), status=403)
    replayer = dlq.Replayer(ctx.redis, ctx.store, ctx.topology, clock=ctx.clock)
    async for _, d in dlq.select(ctx.redis, ctx.topology, dlq.Selection(id=entry_id)):
        done = await replayer.replay(entry_id, d)
        said = f"{entry_id} replayed: {done.outcome} {done.detail}"
        return RedirectResponse(f"/dead?{urlencode({'done': said})}", status_code=303)
    return page("Not found", tag("p", f"No dead entry {entry_id}."), status=404)


async def login(request: Request) -> Response:
    guard = context(request).guard
    if request.method == "POST":
        offered = (await params.form(request)).get("token", "")
        session = guard.session_for(offered)
        if session is not None:
            answer = RedirectResponse("/", status_code=303)
            answer.set_cookie(COOKIE, session, httponly=True, samesite="strict",
                              secure=request.url.scheme == "https")  # fmt: skip
            return answer
    form = tag("form", join([
        Safe('<input type="password" name="token" id="token" autocomplete="off"> '),
        tag("button", "Sign in", type="submit"),
    ]), method="post", action="/login")  # fmt: skip
    wrong = tag("p", "Wrong token.", class_="bad") if request.method == "POST" else Safe("")
    status = 401 if request.method == "POST" else 200
    return page("Sign in", join([wrong, tag("p", "The ops token (OPS_TOKEN):"), form]),
                status=status)  # fmt: skip


def bad_parameter(exc: params.BadParameter) -> Response:
    return page("Bad request", tag("p", str(exc)), status=400)
