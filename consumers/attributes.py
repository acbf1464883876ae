"""What persist keeps of a contact's and a conversation's free-form data for the turns: custom
and additional attributes, the inbox's name. Pure: views in, column values out.

These are user-set JSON (agents, integrations, the widget's `setCustomAttributes`): anything may
be in them, and the views keep them raw. Nothing here ever fails a webhook: a value that is not
an object (or, for a name, text), or that does not parse (a number past float), is not stored
and the column keeps what it had; NULs, which PostgreSQL holds neither in jsonb nor in text, are
replaced. The raw body in webhook_events keeps the original.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ingress import events, views

_NUL, _REPLACEMENT = "\x00", "\ufffd"


class ContactAttributes(msgspec.Struct, frozen=True, kw_only=True):
    """The `upsert_contact` arguments of a contact's attributes: JSON text, or None to keep."""

    custom_attributes: str | None = None
    additional_attributes: str | None = None


class ConversationExtras(msgspec.Struct, frozen=True, kw_only=True):
    custom_attributes: str | None = None
    additional_attributes: str | None = None
    inbox_name: str | None = None


def jsonb(raw: msgspec.Raw) -> str | None:
    """An attributes value as jsonb text, or None when it is no JSON object (not stored)."""
    value = _loads(raw)
    if not isinstance(value, dict):
        return None
    try:
        return events.json_encoder.encode(_without_nul(value)).decode()
    except (msgspec.EncodeError, UnicodeError):  # a lone surrogate: not storable text
        return None


def text(raw: msgspec.Raw) -> str | None:
    """A display text (a name) as a column holds it, or None when it is no text."""
    value = _loads(raw)
    if not isinstance(value, str):
        return None
    try:
        value.encode()
    except UnicodeError:  # a lone surrogate: not storable text
        return None
    return value.replace(_NUL, _REPLACEMENT)


def of_contact(person: views.Person | views.Contact | None) -> ContactAttributes:
    """A contact's attributes, from a message's `sender` or a contact event."""
    if person is None:
        return ContactAttributes()
    return ContactAttributes(
        custom_attributes=jsonb(person.custom_attributes),
        additional_attributes=jsonb(person.additional_attributes),
    )


def of_conversation(view: views.Conversation, inbox: views.InboxRef | None) -> ConversationExtras:
    """A conversation snapshot's attributes, and its inbox's name when the event carries it (a
    message event's `inbox`)."""
    return ConversationExtras(
        custom_attributes=jsonb(view.custom_attributes),
        additional_attributes=jsonb(view.additional_attributes),
        inbox_name=of_conversation_inbox(inbox),
    )


def of_conversation_inbox(inbox: views.InboxRef | None) -> str | None:
    """The inbox's name, when the event carries it (a message event's `inbox`)."""
    return text(inbox.name) if inbox is not None else None


def _loads(raw: msgspec.Raw) -> Any:
    if not raw:  # the field was absent
        return None
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # a number past float, nesting too deep
        return None


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_NUL, _REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
