"""The statements of persist's fast path: one read of the rows a run of entries may touch
(locked), and one write of what the run changed, each a table's part an `INSERT ... SELECT FROM
unnest(...)` or `UPDATE ... FROM unnest(...)` with the effect of the per-entry statements of
consumers/store/{audit,messages,conversations,turns}.py. Round trips are what a run waits on:
two, whatever its length."""

from __future__ import annotations

from typing import Any

import msgspec

from consumers.store.base import Connection
from consumers.store.turns import TURNS_DUE
from ingress import events

Values = tuple[object, ...]

# The columns the fast path reads and writes, in one place: a column added to contacts or
# conversations (and to ConversationRow) that persist sets is added here too, or the fast path
# would not write it. (name, PostgreSQL type); `text[]` travels as JSON (unnest cannot take
# arrays of arrays of different lengths).
CONTACT_COLUMNS = (
    ("name", "text"),
    ("email", "text"),
    ("phone", "text"),
    ("identifier", "text"),
    ("version", "bigint"),
    # Always given on the fast path (Buffered.upsert_contact leaves a sender without them to
    # the per-entry path, whose COALESCE keeps the stored ones).
    ("custom_attributes", "jsonb"),
    ("additional_attributes", "jsonb"),
)
CONVERSATION_COLUMNS = (
    ("inbox_id", "bigint"),
    ("channel", "text"),
    ("contact_id", "bigint"),
    ("identity", "text"),
    ("status", "text"),
    ("assignee_type", "text"),
    ("assignee_id", "bigint"),
    ("handler", "text"),
    ("version", "double precision"),
    ("team_id", "bigint"),
    ("labels", "text[]"),
    ("human_since", "double precision"),
    ("bot_since", "double precision"),
    ("custom_attributes", "jsonb"),
    ("additional_attributes", "jsonb"),
    ("inbox_name", "text"),
)
TURN_COLUMNS = (
    ("last_inbound_message_id", "bigint"),
    ("emitted_through", "bigint"),
    ("answered_through", "bigint"),
    ("pending_count", "integer"),
    ("burst_started_at", "timestamptz"),
    ("turn_due_at", "timestamptz"),
)
MESSAGE_COLUMNS = (
    ("account_id", "bigint"),
    ("message_id", "bigint"),
    ("conversation_id", "bigint"),
    ("direction", "text"),
    ("sender_kind", "text"),
    ("sender_id", "bigint"),
    ("private", "boolean"),
    ("message_type", "text"),
    ("content", "text"),
    ("content_type", "text"),
    ("attachments", "jsonb"),
    ("status", "text"),
    ("created_at", "timestamptz"),
    ("ext_ref", "text"),
    ("deleted", "boolean"),
    ("version", "double precision"),
)

AUDIT_COLUMNS = (
    ("stream_id", "text"),
    ("delivery_id", "text"),
    ("received_at", "timestamptz"),
    ("source", "text"),
    ("event", "text"),
    ("account_id", "bigint"),
    ("chatwoot_conversation_id", "bigint"),
    ("signed", "boolean"),
    ("outcome", "text"),
    ("detail", "text"),
    ("body", "bytea"),
)
# A stored message's updates folded (MessageSQL.update_message): `newer` says whether the
# content columns are written.
MESSAGE_UPDATE_COLUMNS = (
    ("account_id", "bigint"),
    ("message_id", "bigint"),
    ("status", "text"),
    ("newer", "boolean"),
    ("content", "text"),
    ("content_type", "text"),
    ("attachments", "jsonb"),
    ("deleted", "boolean"),
    ("version", "double precision"),
)
CONTACT_KEY = (("account_id", "bigint"), ("chatwoot_contact_id", "bigint"))
CONVERSATION_KEY = (("account_id", "bigint"), ("conversation_id", "bigint"))
# `clear_answer`: a human took it, no bot answer is awaited (as set_takeover).
CONVERSATION_UPDATE_COLUMNS = (
    *CONVERSATION_KEY,
    *CONVERSATION_COLUMNS,
    *TURN_COLUMNS,
    ("clear_answer", "boolean"),
)


Columns = tuple[tuple[str, str], ...]


class Found(msgspec.Struct, frozen=True, kw_only=True):
    """What `read` found: tuples in the order of the column lists."""

    processed: list[str]
    conversations: list[tuple[Any, ...]]  # CONVERSATION_KEY + CONVERSATION_ + TURN_COLUMNS
    messages: list[tuple[Any, ...]]  # (account_id, message_id, status, version)


class Written(msgspec.Struct, frozen=True, kw_only=True):
    audit: int  # audit rows inserted (the others were there already)
    messages: int  # messages inserted


class _Params:
    """Numbers the parameters of one statement made of several parts."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def unnest(self, columns: Columns, rows: list[Values]) -> str:
        """`unnest($n::t1[], ...) AS u(c1, ...)` over `rows`; `text[]` and `jsonb` values
        travel as text (unnest cannot take arrays of arrays of different lengths)."""
        casts = []
        for n, (_, kind) in enumerate(columns):
            values = [row[n] for row in rows]
            if kind == "text[]":
                values = [events.json_encoder.encode(v).decode() for v in values]
            elif kind == "jsonb":
                values = [v.decode() if isinstance(v, bytes) else v for v in values]
            wire = "text" if kind in ("text[]", "jsonb") else kind
            casts.append(f"{self.add(values)}::{wire}[]")
        names = ", ".join(name for name, _ in columns)
        return f"unnest({', '.join(casts)}) AS u({names})"


def _value(name: str, kind: str) -> str:
    """The SQL expression of column `name` of `u`."""
    if kind == "text[]":
        return f"ARRAY(SELECT jsonb_array_elements_text(u.{name}::jsonb))"
    if kind == "jsonb":
        return f"u.{name}::jsonb"
    return f"u.{name}"


def _keys(params: _Params, keys: list[tuple[int, int]]) -> str:
    return (
        f"SELECT * FROM unnest({params.add([a for a, _ in keys])}::bigint[], "
        f"{params.add([b for _, b in keys])}::bigint[])"
    )


async def read(
    conn: Connection,
    *,
    stream_ids: list[str],
    conversations: list[tuple[int, int]],
    messages: list[tuple[int, int]],
) -> Found:
    """The stream ids already recorded, and the conversations and stored messages named, their
    rows locked in key order (two runs lock in one order: no deadlock between them)."""
    params = _Params()
    columns = ", ".join(name for name, _ in CONVERSATION_COLUMNS + TURN_COLUMNS)
    row = await conn.fetchrow(
        f"""
        SELECT
            (SELECT array_agg(stream_id) FROM webhook_events
                WHERE stream_id = ANY({params.add(stream_ids)}::text[])) AS processed,
            (SELECT array_agg(c) FROM (
                SELECT account_id, chatwoot_conversation_id, {columns} FROM conversations
                WHERE (account_id, chatwoot_conversation_id) IN ({_keys(params, conversations)})
                ORDER BY account_id, chatwoot_conversation_id FOR UPDATE) c) AS conversations,
            (SELECT array_agg(m) FROM (
                SELECT account_id, chatwoot_message_id, status, version FROM messages
                WHERE (account_id, chatwoot_message_id) IN ({_keys(params, messages)})
                ORDER BY account_id, chatwoot_message_id FOR UPDATE) m) AS messages
        """,
        *params.values,
    )
    assert row is not None
    return Found(
        processed=list(row["processed"] or []),
        conversations=list(row["conversations"] or []),
        messages=list(row["messages"] or []),
    )


async def write(
    conn: Connection,
    *,
    audit: list[Values],
    contacts: list[Values],
    messages: list[Values],
    updates: list[Values],
    conversations: list[Values],
    notify: bool,
) -> Written:
    """Everything a run changed, in one statement: audit rows (AUDIT_COLUMNS, with their
    outcomes), contacts (CONTACT_KEY + CONTACT_COLUMNS, one row per contact, guarded by
    version), new messages (MESSAGE_COLUMNS), stored messages moved forward
    (MESSAGE_UPDATE_COLUMNS), locked conversations as the run left them
    (CONVERSATION_UPDATE_COLUMNS), and the turns worker's wake-up (sent at commit, dropped
    with a rolled-back savepoint). Each part touches its own rows: none is written twice."""
    p = _Params()
    audit_names = ", ".join(name for name, _ in AUDIT_COLUMNS)
    contact_columns = (*CONTACT_KEY, *CONTACT_COLUMNS)
    contact_names = ", ".join(name for name, _ in contact_columns)
    contact_values = ", ".join(_value(name, kind) for name, kind in contact_columns)
    contact_sets = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in CONTACT_COLUMNS)
    renamed = {"message_id": "chatwoot_message_id", "conversation_id": "chatwoot_conversation_id"}
    message_names = ", ".join(renamed.get(name, name) for name, _ in MESSAGE_COLUMNS)
    message_values = ", ".join(_value(name, kind) for name, kind in MESSAGE_COLUMNS)
    conversation_sets = ", ".join(
        f"{name} = {_value(name, kind)}" for name, kind in CONVERSATION_COLUMNS + TURN_COLUMNS
    )
    row = await conn.fetchrow(
        f"""
        WITH audit AS (
            INSERT INTO webhook_events ({audit_names})
            SELECT * FROM {p.unnest(AUDIT_COLUMNS, audit)}
            ON CONFLICT (stream_id) DO NOTHING RETURNING 1
        ), contacts AS (
            INSERT INTO contacts ({contact_names})
            SELECT {contact_values} FROM {p.unnest(contact_columns, contacts)}
            ON CONFLICT (account_id, chatwoot_contact_id) DO UPDATE SET {contact_sets},
                updated_at = now()
            WHERE contacts.version <= EXCLUDED.version
        ), inserted AS (
            INSERT INTO messages ({message_names})
            SELECT {message_values} FROM {p.unnest(MESSAGE_COLUMNS, messages)}
            ON CONFLICT (account_id, chatwoot_message_id) DO NOTHING RETURNING 1
        ), updated AS (
            UPDATE messages m SET status = u.status,
                content = CASE WHEN u.newer THEN u.content ELSE m.content END,
                content_type = CASE WHEN u.newer THEN u.content_type ELSE m.content_type END,
                attachments = CASE WHEN u.newer THEN u.attachments::jsonb ELSE m.attachments END,
                deleted = m.deleted OR u.deleted,
                version = GREATEST(m.version, u.version)
            FROM {p.unnest(MESSAGE_UPDATE_COLUMNS, updates)}
            WHERE m.account_id = u.account_id AND m.chatwoot_message_id = u.message_id
        ), conversations AS (
            UPDATE conversations c SET {conversation_sets},
                answer_due_at = CASE WHEN u.clear_answer THEN NULL ELSE c.answer_due_at END,
                answer_holds = CASE WHEN u.clear_answer THEN 0 ELSE c.answer_holds END
            FROM {p.unnest(CONVERSATION_UPDATE_COLUMNS, conversations)}
            WHERE c.account_id = u.account_id AND c.chatwoot_conversation_id = u.conversation_id
        ), woken AS (
            SELECT pg_notify({p.add(TURNS_DUE)}, '') WHERE {p.add(notify)}::boolean
        )
        SELECT (SELECT count(*) FROM audit) AS audit,
            (SELECT count(*) FROM inserted) AS messages,
            (SELECT count(*) FROM woken) AS woken
        """,
        *p.values,
    )
    assert row is not None
    return Written(audit=int(row["audit"]), messages=int(row["messages"]))
