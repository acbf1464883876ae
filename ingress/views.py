"""Small views of Chatwoot webhook bodies: only the fields Switchboard reads.

Chatwoot adds fields between versions and sends `null` where one might expect a value, so
every field has a default and unknown fields are ignored. The raw body is always kept beside.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# Bounds at the door (see docs/reliability.md): a value the database cannot hold, or one that
# cannot be right, fails the view with the field's path, so its entry is dead-lettered with
# that reason instead of failing deeper down as something that looks like an outage.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EPOCH_MIN, EPOCH_MAX = 946_684_800, 7_258_118_400  # 2000-01-01 and 2200-01-01, UTC

Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# Epoch seconds (an infinite or NaN value fails these bounds too).
Epoch = Annotated[float, msgspec.Meta(ge=EPOCH_MIN, le=EPOCH_MAX)]
EpochInt = Annotated[int, msgspec.Meta(ge=EPOCH_MIN, le=EPOCH_MAX)]
# Identity and label text: PostgreSQL text cannot hold NUL, and dropping it would make
# `a\x00b@x.io` the same customer as `ab@x.io`. (Message content is free text: persist
# replaces its NULs, the raw body keeps them.)
Text = Annotated[str, msgspec.Meta(pattern="^[^\x00]*$")]
# What a customer's identity is made of (phone, email, identifier, source id): bounded, since
# the identity is a btree key (`conversations_one_active`, at most ~2.7 kB a row) and a value
# past it would make the webhook unstorable. No real address, phone or id comes near this.
IDENTITY_MAX = 500
IdentityText = Annotated[str, msgspec.Meta(pattern="^[^\x00]*$", max_length=IDENTITY_MAX)]
# Our reply refs are at most 200 characters (`OutboundEntry.ref`): a longer `ext_ref` is not ours.
REF_MAX = 200
# Free-form values only shown to agents (a contact's or conversation's custom and additional
# attributes, set by users and integrations; an inbox's name): kept raw, unparsed, so that no
# shape or number in them can fail the view and cost its webhook. Persist stores what it can
# (consumers/attributes.py) and leaves out the rest; the raw body keeps everything.
Loose = msgspec.Raw
NOTHING = msgspec.Raw()

Id = Int64 | Text | None
# The ingress routes whatever arrives (Chatwoot does not resend): its view takes any id and
# treats one out of range as absent; persist dead-letters the entry with the reason.
_AnyId = int | str | None


class Ref(msgspec.Struct, kw_only=True):
    id: Id = None


class InboxRef(Ref, kw_only=True):
    """A message's `inbox`: `{id, name}`."""

    name: Loose = NOTHING


class _RoutingRef(msgspec.Struct, kw_only=True):
    id: _AnyId = None


class _AccountOf(msgspec.Struct, kw_only=True):
    account_id: _AnyId = None


class _RoutingConversation(msgspec.Struct, kw_only=True):
    id: _AnyId = None
    account: _RoutingRef | None = None


# Events whose body is the conversation (`Conversation#webhook_data`), automation-rule and
# macro webhooks included.
CONVERSATION_BODIED = ("conversation_", "automation_event.", "macro.")


class Routing(msgspec.Struct, kw_only=True):
    """What the ingress reads of a webhook: just enough to route and inspect it."""

    event: str = ""
    id: _AnyId = None
    account: _RoutingRef | None = None
    account_id: _AnyId = None
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
        if self.event.startswith(CONVERSATION_BODIED):
            return _as_int(self.id)  # these events are the conversation itself
        return None


def _as_int(value: _AnyId) -> int | None:
    """An id the routing fields can carry: out of int64 is no id (persist says why)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    return number if number is not None and INT64_MIN <= number <= INT64_MAX else None


class Person(msgspec.Struct, kw_only=True):
    """A message sender or conversation assignee. Contacts have no `type` key."""

    id: Int64 | None = None
    name: Text | None = None
    email: IdentityText | None = None
    phone_number: IdentityText | None = None
    identifier: IdentityText | None = None
    type: Text | None = None
    custom_attributes: Loose = NOTHING
    additional_attributes: Loose = NOTHING


class ContactInbox(msgspec.Struct, kw_only=True):
    source_id: IdentityText | None = None


class Team(msgspec.Struct, kw_only=True):
    id: Int64 | None = None


class Meta(msgspec.Struct, kw_only=True):
    sender: Person | None = None
    assignee: Person | None = None
    assignee_type: Text | None = None
    team: Team | None = None


class EmbeddedMessage(msgspec.Struct, kw_only=True):
    """A message inside `conversation.messages[]`: int types, epoch times, and a status."""

    id: Int64
    message_type: Int64 | None = None
    status: Text | None = None
    updated_at: Text | None = None


class Conversation(msgspec.Struct, kw_only=True):
    id: Int64
    inbox_id: Int64 | None = None
    channel: Text | None = None
    status: Text | None = None
    labels: list[Text] = []
    contact_inbox: ContactInbox | None = None
    meta: Meta | None = None
    messages: list[EmbeddedMessage] = []
    created_at: Epoch | None = None
    updated_at: Epoch | None = None
    account: Ref | None = None
    custom_attributes: Loose = NOTHING
    additional_attributes: Loose = NOTHING


class ConversationEvent(Conversation, kw_only=True):
    event: Text
    changed_attributes: list[dict[str, Any]] | None = None


class Message(msgspec.Struct, kw_only=True):
    event: Text
    id: Int64
    content: str | None = None  # free text: NULs replaced at persist
    content_type: Text | None = None
    content_attributes: dict[str, Any] | None = None
    message_type: Text | Int64 | None = None
    private: bool = False
    source_id: Text | None = None
    created_at: Text | EpochInt | None = None
    sender: Person | None = None
    inbox: InboxRef | None = None
    account: Ref | None = None
    conversation: Conversation | None = None
    attachments: list[dict[str, Any]] = []

    @property
    def ext_ref(self) -> str | None:
        value = (self.content_attributes or {}).get("ext_ref")
        # Anyone with API access can set one: a value longer than any ref of ours is not ours
        # and is not stored in the indexed column (the raw body keeps it).
        return value if isinstance(value, str) and len(value) <= REF_MAX else None


class Contact(msgspec.Struct, kw_only=True):
    event: Text
    id: Int64
    name: Text | None = None
    email: IdentityText | None = None
    phone_number: IdentityText | None = None
    identifier: IdentityText | None = None
    account: Ref | None = None
    changed_attributes: list[dict[str, Any]] | None = None
    custom_attributes: Loose = NOTHING
    additional_attributes: Loose = NOTHING


class Typing(msgspec.Struct, kw_only=True):
    """`conversation_typing_on|off`: the conversation inside, and who typed."""

    event: Text
    conversation: Conversation | None = None
    user: Person | None = None


routing_decoder = msgspec.json.Decoder(Routing)
message_decoder = msgspec.json.Decoder(Message)
conversation_decoder = msgspec.json.Decoder(ConversationEvent)
contact_decoder = msgspec.json.Decoder(Contact)
typing_decoder = msgspec.json.Decoder(Typing)
