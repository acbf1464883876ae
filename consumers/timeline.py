"""One conversation's story, in time order (pure): built from its stored rows and its dead
letters, rendered as text for `switchboard conversation` and as data for the ops app."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import msgspec

from ingress.events import DeadEntry

PREVIEW = 80
# A handler change is explained by the signal stored at most this long before it.
SIGNAL_WINDOW = dt.timedelta(seconds=5)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TurnLogged(msgspec.Struct, frozen=True, kw_only=True):
    """A turn as the turns worker emitted it (written by `record_turns`)."""

    turn: str
    account_id: int
    conversation_id: int
    through: int
    message_ids: list[int]
    route: str | None
    stream: str | None


class TimelineRows(msgspec.Struct, kw_only=True):
    """Everything stored about one conversation, as plain rows (dicts), oldest first."""

    conversation: dict[str, Any]
    contact: dict[str, Any] | None
    webhooks: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    replies: list[dict[str, Any]]


class Kind(enum.StrEnum):
    WEBHOOK = "webhook"
    MESSAGE = "message"
    HANDLER = "handler"
    TURN = "turn"
    REPLY = "reply"
    HANDOFF = "handoff"
    DEAD = "dead"


class Event(msgspec.Struct, frozen=True, kw_only=True):
    at: dt.datetime
    kind: Kind
    summary: str
    fields: dict[str, Any] = {}


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    account: int
    conversation: int
    inbox: int | None
    channel: str | None
    status: str | None
    handler: str
    assignee: str | None
    contact: dict[str, Any] | None
    events: list[Event]


def concerns(dead: DeadEntry, account: int, conversation: int) -> bool:
    """Whether a dead letter is about this conversation (its original entry says so)."""
    fields = dead.original
    return (
        fields.get("account") == str(account).encode()
        and fields.get("conversation") == str(conversation).encode()
    )


def build(rows: TimelineRows, dead: list[tuple[str, DeadEntry]]) -> Timeline:
    conv = rows.conversation
    found = (
        [_webhook(w) for w in rows.webhooks]
        + [_message(m) for m in rows.messages]
        + [_turn(t) for t in rows.turns]
        + [_reply(r) for r in rows.replies]
        + [_dead(entry_id, d) for entry_id, d in dead]
    )
    found += _handler_changes(conv, found)
    # Stable: at one instant, the order above (a webhook before the message it brought).
    found.sort(key=lambda e: e.at)
    assignee = conv.get("assignee_type")
    if assignee and conv.get("assignee_id") is not None:
        assignee = f"{assignee} {conv['assignee_id']}"
    return Timeline(
        account=conv["account_id"],
        conversation=conv["chatwoot_conversation_id"],
        inbox=conv.get("inbox_id"),
        channel=conv.get("channel"),
        status=conv.get("status"),
        handler=conv["handler"],
        assignee=assignee,
        contact=rows.contact,
        events=found,
    )


def _webhook(row: dict[str, Any]) -> Event:
    detail = f" ({row['detail']})" if row.get("detail") else ""
    return Event(
        at=row["received_at"],
        kind=Kind.WEBHOOK,
        summary=f"{row['event']} {row['outcome']}{detail}, delivery {row['delivery_id'] or '-'}",
        fields={k: row.get(k) for k in ("event", "delivery_id", "outcome", "detail", "source",
                                        "stream_id")},
    )  # fmt: skip


def _message(row: dict[str, Any]) -> Event:
    flags = [f for f in ("private", "deleted") if row.get(f)]
    created = row.get("created_at")
    if created is not None and row.get("version", 0) > created.timestamp() + 1:
        flags.append("updated")  # Chatwoot's updated_at is later: edited or its status moved
    content = preview(row.get("content"))
    return Event(
        at=created or row["stored_at"],
        kind=Kind.MESSAGE,
        summary=f"#{row['chatwoot_message_id']} {row['direction']} from {row['sender_kind']}"
        + (f" [{', '.join(flags)}]" if flags else "")
        + f": {content}",
        fields={
            "id": row["chatwoot_message_id"],
            "direction": row["direction"],
            "sender_kind": row["sender_kind"],
            "status": row["status"],
            "content": content,
            "ext_ref": row.get("ext_ref"),
            "private": bool(row.get("private")),
            "deleted": bool(row.get("deleted")),
            "updated": "updated" in flags,
        },
    )


def _turn(row: dict[str, Any]) -> Event:
    ids = list(row["message_ids"])
    return Event(
        at=row["emitted_at"],
        kind=Kind.TURN,
        summary=f"{row['turn']} to {row.get('route')}: messages {', '.join(map(str, ids))}",
        fields={"turn": row["turn"], "route": row.get("route"), "message_ids": ids,
                "through": row["through"]},
    )  # fmt: skip


def _reply(row: dict[str, Any]) -> Event:
    kind = row["kind"]
    status = row["status"]
    why = row.get("last_error")
    summary = f"{row['ref']} {kind} {status} after {row['attempts']} attempt(s)"
    if why:
        summary += f" ({'suppressed: ' if status == 'suppressed' else 'last error: '}{why})"
    if row.get("content"):
        summary += f": {preview(row['content'])}"
    return Event(
        at=row["created_at"],
        kind=Kind.HANDOFF if kind == "handoff" else Kind.REPLY,
        summary=summary,
        fields={
            "ref": row["ref"],
            "kind": kind,
            "status": status,
            "attempts": row["attempts"],
            "last_error": why if status != "suppressed" else None,
            "suppressed": why if status == "suppressed" else None,
            "turn": row.get("turn"),
            "chatwoot_message_id": row.get("chatwoot_message_id"),
            "sent_at": row.get("sent_at"),
            "content": preview(row.get("content")),
        },
    )


def _dead(entry_id: str, dead: DeadEntry) -> Event:
    at = EPOCH + dt.timedelta(milliseconds=int(entry_id.split("-")[0]))
    return Event(
        at=at,
        kind=Kind.DEAD,
        summary=f"{entry_id} from {dead.stream}/{dead.group}: {dead.reason}: "
        f"{preview(dead.error)}",
        fields={"entry": entry_id, "stream": dead.stream, "group": dead.group, "id": dead.id,
                "reason": dead.reason, "error": dead.error},
    )  # fmt: skip


def _handler_changes(conv: dict[str, Any], found: list[Event]) -> list[Event]:
    """The latest time a human took the conversation and the latest it came back to the bot
    (the store keeps only those maxima), each with the stored signal that explains it."""
    out = []
    for handler, column in (("human", "human_since"), ("bot", "bot_since")):
        since = conv.get(column)
        if since is None:
            continue
        at = EPOCH + dt.timedelta(seconds=float(since))
        why = _signal(at, found)
        out.append(Event(at=at, kind=Kind.HANDLER,
                         summary=f"handled by the {handler}" + (f": {why}" if why else ""),
                         fields={"handler": handler, "why": why}))  # fmt: skip
    return out


def _signal(at: dt.datetime, found: list[Event]) -> str | None:
    near = [e for e in found if at - SIGNAL_WINDOW <= e.at <= at + SIGNAL_WINDOW]
    for event in near:
        f = event.fields
        if event.kind is Kind.MESSAGE and f["sender_kind"] == "user" and not f["private"]:
            return f"a human agent replied (message #{f['id']})"
    for event in near:
        if event.kind is Kind.HANDOFF:
            return f"hand-off {event.fields['ref']}"
    for event in near:
        if event.kind is Kind.WEBHOOK and event.fields["event"] != "message_created":
            return f"webhook {event.fields['event']}"
    return None


def preview(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= PREVIEW else flat[: PREVIEW - 1] + "…"


def render(timeline: Timeline) -> str:
    t = timeline
    who = t.contact or {}
    contact = ", ".join(str(v) for v in who.values() if v) or "-"
    lines = [
        f"conversation {t.account}/{t.conversation}: inbox {t.inbox} {t.channel or ''}".rstrip(),
        f"status {t.status}, handled by the {t.handler}, assignee {t.assignee or '-'}",
        f"contact: {contact}",
        "",
    ]
    for event in t.events:
        stamp = event.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        lines.append(f"{stamp}  {event.kind:<8} {event.summary}")
    return "\n".join(lines) + "\n"
