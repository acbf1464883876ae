"""Small views of Chatwoot webhook bodies: only the fields Switchboard reads.

Chatwoot adds fields between versions and sends `null` where one might expect a value, so
every field has a default and unknown fields are ignored. The raw body is always kept beside.
"""

from __future__ import annotations

from typing import Any

import msgspec

Id = int | str | None


class Ref(msgspec.Struct, kw_only=True):
    id: Id = None


class _AccountOf(msgspec.Struct, kw_only=True):
    account_id: Id = None


class _RoutingConversation(msgspec.Struct, kw_only=True):
    id: Id = None
    account: Ref | None = None


class Routing(msgspec.Struct, kw_only=True):
    """What the ingress reads of a webhook: just enough to route and inspect it."""

    event: str = ""
    id: Id = None
    account: Ref | None = None
    account_id: Id = None
    conversation: _RoutingConversation | None = None
    messages: list[_AccountOf] = []

    def account_id_int(self) -> int | None:
        """Top-level `account` in most events; inside the conversation in typing events; in the
        embedded message of conversation events from Chatwoot before v4.14.2."""
        for candidate in (
            self.account.id if self.account else None,
            self.account_id,
            self.conversation.account.id
            if self.conversation and self.conversation.account
            else None,
            self.messages[0].account_id if self.messages else None,
        ):
            if (value := _as_int(candidate)) is not None:
                return value
        return None

    def account_ids(self) -> frozenset[int]:
        """Every account id the body names anywhere we route on: a secret bound to one account
        verifies only a body naming that account alone."""
        candidates = [
            self.account.id if self.account else None,
            self.account_id,
            self.conversation.account.id
            if self.conversation and self.conversation.account
            else None,
            *(message.account_id for message in self.messages),
        ]
        return frozenset(v for c in candidates if (v := _as_int(c)) is not None)

    def conversation_id_int(self) -> int | None:
        if self.conversation is not None:
            return _as_int(self.conversation.id)
        if self.event.startswith("conversation_"):
            return _as_int(self.id)  # conversation events are the conversation itself
        return None


def _as_int(value: Id) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class Person(msgspec.Struct, kw_only=True):
    """A message sender or conversation assignee. Contacts have no `type` key."""

    id: int | None = None
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    type: str | None = None


class ContactInbox(msgspec.Struct, kw_only=True):
    source_id: str | None = None


class Team(msgspec.Struct, kw_only=True):
    id: int | None = None


class Meta(msgspec.Struct, kw_only=True):
    sender: Person | None = None
    assignee: Person | None = None
    assignee_type: str | None = None
    team: Team | None = None


class EmbeddedMessage(msgspec.Struct, kw_only=True):
    """A message inside `conversation.messages[]`: int types, epoch times, and a status."""

    id: int
    message_type: int | None = None
    status: str | None = None
    updated_at: str | None = None


class Conversation(msgspec.Struct, kw_only=True):
    id: int
    inbox_id: int | None = None
    channel: str | None = None
    status: str | None = None
    labels: list[str] = []
    contact_inbox: ContactInbox | None = None
    meta: Meta | None = None
    messages: list[EmbeddedMessage] = []
    created_at: int | float | None = None
    updated_at: float | None = None
    account: Ref | None = None


class ConversationEvent(Conversation, kw_only=True):
    event: str
    changed_attributes: list[dict[str, Any]] | None = None


class Message(msgspec.Struct, kw_only=True):
    event: str
    id: int
    content: str | None = None
    content_type: str | None = None
    content_attributes: dict[str, Any] | None = None
    message_type: str | int | None = None
    private: bool = False
    source_id: str | None = None
    created_at: str | int | None = None
    sender: Person | None = None
    inbox: Ref | None = None
    account: Ref | None = None
    conversation: Conversation | None = None
    attachments: list[dict[str, Any]] = []

    @property
    def ext_ref(self) -> str | None:
        value = (self.content_attributes or {}).get("ext_ref")
        return value if isinstance(value, str) else None


class Contact(msgspec.Struct, kw_only=True):
    event: str
    id: int
    name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    identifier: str | None = None
    account: Ref | None = None
    changed_attributes: list[dict[str, Any]] | None = None


routing_decoder = msgspec.json.Decoder(Routing)
message_decoder = msgspec.json.Decoder(Message)
conversation_decoder = msgspec.json.Decoder(ConversationEvent)
contact_decoder = msgspec.json.Decoder(Contact)
