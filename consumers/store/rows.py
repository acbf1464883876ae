"""The rows the store reads and writes, as Structs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from consumers.conversation import Handler
from consumers.statuses import Outbound
from ingress import events


class ConversationRow(msgspec.Struct, kw_only=True):
    account_id: int
    conversation_id: int
    inbox_id: int | None
    channel: str | None
    contact_id: int | None
    identity: str | None
    status: str | None
    assignee_type: str | None
    assignee_id: int | None
    team_id: int | None = None
    labels: list[str] = []
    handler: Handler
    human_since: float | None = None
    bot_since: float | None = None
    version: float
    # Written, not read back by lock_conversation: jsonb text, None to keep the stored.
    custom_attributes: str | None = None
    additional_attributes: str | None = None
    inbox_name: str | None = None


class MessageRow(msgspec.Struct, kw_only=True):
    account_id: int
    message_id: int
    conversation_id: int
    direction: str
    sender_kind: str
    sender_id: int | None
    private: bool
    message_type: str | None
    content: str | None
    content_type: str | None
    attachments: bytes  # JSON
    status: str
    created_at: dt.datetime | None
    ext_ref: str | None
    deleted: bool = False
    version: float = 0.0


class StoredMessage(msgspec.Struct, kw_only=True):
    status: str
    version: float


class DueTurn(msgspec.Struct, kw_only=True):
    account_id: int
    conversation_id: int
    inbox_id: int | None
    channel: str | None
    contact_id: int | None
    handler: Handler
    emitted_through: int
    answered_through: int
    last_inbound_message_id: int


class TurnContent(msgspec.Struct, kw_only=True):
    """What a due turn carries, read in one query (consumers/store/turns.py)."""

    messages: list[events.TurnMessage]
    history: list[events.HistoryMessage] = []
    contact: events.TurnContact | None = None
    inbox_name: str | None = None
    labels: list[str] = []
    custom_attributes: dict[str, Any] = {}
    additional_attributes: dict[str, Any] = {}


class DueAnswer(msgspec.Struct, kw_only=True):
    """A conversation whose turn has waited past its answer deadline."""

    account_id: int
    conversation_id: int
    inbox_id: int | None
    channel: str | None
    handler: Handler
    status: str | None
    active: bool
    answered_through: int
    answer_through: int
    answer_holds: int


class ReplyContext(msgspec.Struct, kw_only=True):
    """What the deliverer gates a reply on."""

    inbox_id: int | None
    channel: str | None
    status: str | None
    handler: Handler
    last_inbound_message_id: int


class OutboundRow(msgspec.Struct, kw_only=True):
    ref: str
    account_id: int
    kind: str
    turn: str | None
    status: Outbound
    attempts: int
    chatwoot_message_id: int | None
    chatwoot_conversation_id: int | None
    next_attempt_at: dt.datetime | None
    known_through: int | None
    # When an agent-started conversation's create call was made (its outcome may be unknown).
    create_started_at: dt.datetime | None = None
    # A public reply without a turn: the last customer message when it was queued (it answers).
    covers_through: int | None = None
