"""Set-based writes of persist's fast path: one statement per table for a run of entries,
`INSERT ... SELECT FROM unnest(...)` or `UPDATE ... FROM unnest(...)`, each the same effect as
the per-entry statement of consumers/store/{audit,messages,conversations,turns}.py."""

from __future__ import annotations

from consumers.store.base import Connection
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


def _unnest(columns: tuple[tuple[str, str], ...]) -> str:
    """`unnest($1::t1[], ...) AS u(c1, ...)`; `text[]` and `jsonb` columns come as text."""
    casts = []
    for n, (_, kind) in enumerate(columns, 1):
        wire = "text" if kind in ("text[]", "jsonb") else kind
        casts.append(f"${n}::{wire}[]")
    names = ", ".join(name for name, _ in columns)
    return f"unnest({', '.join(casts)}) AS u({names})"


def _value(name: str, kind: str) -> str:
    """The SQL expression of column `name` of `u`."""
    if kind == "text[]":
        return f"ARRAY(SELECT jsonb_array_elements_text(u.{name}::jsonb))"
    if kind == "jsonb":
        return f"u.{name}::jsonb"
    return f"u.{name}"


def _arrays(rows: list[Values], columns: tuple[tuple[str, str], ...]) -> list[object]:
    """The rows as one array per column, `text[]` values as JSON, `jsonb` ones as text."""
    out: list[object] = []
    for n, (_, kind) in enumerate(columns):
        values = [row[n] for row in rows]
        if kind == "text[]":
            values = [events.json_encoder.encode(v).decode() for v in values]
        elif kind == "jsonb":
            values = [v.decode() if isinstance(v, bytes) else v for v in values]
        out.append(values)
    return out


async def insert_audit(conn: Connection, rows: list[Values]) -> int:
    """Audit rows (AUDIT_COLUMNS) with their outcomes; how many were not there yet."""
    names = ", ".join(name for name, _ in AUDIT_COLUMNS)
    count = await conn.fetchval(
        f"""
        WITH stored AS (
            INSERT INTO webhook_events ({names}) SELECT * FROM {_unnest(AUDIT_COLUMNS)}
            ON CONFLICT (stream_id) DO NOTHING RETURNING 1)
        SELECT count(*) FROM stored
        """,
        *_arrays(rows, AUDIT_COLUMNS),
    )
    return int(count)


async def upsert_contacts(conn: Connection, rows: list[Values]) -> None:
    """Contacts (CONTACT_KEY + CONTACT_COLUMNS), one row per contact, guarded by version."""
    columns = (*CONTACT_KEY, *CONTACT_COLUMNS)
    names = ", ".join(name for name, _ in columns)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name, _ in CONTACT_COLUMNS)
    await conn.execute(
        f"""
        INSERT INTO contacts ({names}) SELECT * FROM {_unnest(columns)}
        ON CONFLICT (account_id, chatwoot_contact_id) DO UPDATE SET {updates}, updated_at = now()
        WHERE contacts.version <= EXCLUDED.version
        """,
        *_arrays(rows, columns),
    )


async def insert_messages(conn: Connection, rows: list[Values]) -> int:
    """New messages (MESSAGE_COLUMNS); how many were not there yet."""
    renamed = {"message_id": "chatwoot_message_id", "conversation_id": "chatwoot_conversation_id"}
    names = ", ".join(renamed.get(name, name) for name, _ in MESSAGE_COLUMNS)
    selected = ", ".join(_value(name, kind) for name, kind in MESSAGE_COLUMNS)
    count = await conn.fetchval(
        f"""
        WITH stored AS (
            INSERT INTO messages ({names}) SELECT {selected} FROM {_unnest(MESSAGE_COLUMNS)}
            ON CONFLICT (account_id, chatwoot_message_id) DO NOTHING RETURNING 1)
        SELECT count(*) FROM stored
        """,
        *_arrays(rows, MESSAGE_COLUMNS),
    )
    return int(count)


async def update_messages(conn: Connection, rows: list[Values]) -> None:
    """Stored messages moved forward (MESSAGE_UPDATE_COLUMNS), as MessageSQL.update_message."""
    await conn.execute(
        f"""
        UPDATE messages m SET status = u.status,
            content = CASE WHEN u.newer THEN u.content ELSE m.content END,
            content_type = CASE WHEN u.newer THEN u.content_type ELSE m.content_type END,
            attachments = CASE WHEN u.newer THEN u.attachments::jsonb ELSE m.attachments END,
            deleted = m.deleted OR u.deleted,
            version = GREATEST(m.version, u.version)
        FROM {_unnest(MESSAGE_UPDATE_COLUMNS)}
        WHERE m.account_id = u.account_id AND m.chatwoot_message_id = u.message_id
        """,
        *_arrays(rows, MESSAGE_UPDATE_COLUMNS),
    )


async def update_conversations(conn: Connection, rows: list[Values]) -> None:
    """Locked conversations as the run left them (CONVERSATION_UPDATE_COLUMNS)."""
    sets = ", ".join(
        f"{name} = {_value(name, kind)}" for name, kind in CONVERSATION_COLUMNS + TURN_COLUMNS
    )
    await conn.execute(
        f"""
        UPDATE conversations c SET {sets},
            answer_due_at = CASE WHEN u.clear_answer THEN NULL ELSE c.answer_due_at END,
            answer_holds = CASE WHEN u.clear_answer THEN 0 ELSE c.answer_holds END
        FROM {_unnest(CONVERSATION_UPDATE_COLUMNS)}
        WHERE c.account_id = u.account_id AND c.chatwoot_conversation_id = u.conversation_id
        """,
        *_arrays(rows, CONVERSATION_UPDATE_COLUMNS),
    )
