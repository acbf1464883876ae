"""The conversation state machine (pure): identity, who speaks, and who handles a conversation."""

from __future__ import annotations

import enum

import msgspec

from ingress import views


class Handler(enum.StrEnum):
    BOT = "bot"
    HUMAN = "human"


class SenderKind(enum.StrEnum):
    CONTACT = "contact"
    USER = "user"
    AGENT_BOT = "agent_bot"
    SYSTEM = "system"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Speaker(msgspec.Struct, frozen=True, kw_only=True):
    direction: Direction
    kind: SenderKind
    id: int | None


# Channels whose customer is known by the provider's id in contact_inbox.source_id.
_SOURCE_ID_CHANNELS = {
    "Channel::FacebookPage": "facebook",
    "Channel::Instagram": "instagram",
    "Channel::Telegram": "telegram",
    "Channel::Line": "line",
    "Channel::Tiktok": "tiktok",
    "Channel::TwitterProfile": "twitter",
    "Channel::Api": "api",
}


def identity(conversation: views.Conversation) -> str | None:
    """Who the customer is on this channel, as a stable string; None when nothing identifies them.

    WhatsApp and SMS by phone, email by address, the widget by identifier or email once the
    visitor is identified (else the contact id), social channels by their provider id.
    """
    meta = conversation.meta or views.Meta()
    sender = meta.sender or views.Person()
    source_id = conversation.contact_inbox.source_id if conversation.contact_inbox else None
    channel = conversation.channel or ""
    if channel in ("Channel::Whatsapp", "Channel::TwilioSms", "Channel::Sms"):
        if sender.phone_number:
            return f"phone:{sender.phone_number}"
        if source_id:
            return f"phone:+{source_id.lstrip('+')}"
    elif channel == "Channel::Email":
        if sender.email:
            return f"email:{sender.email.strip().lower()}"
    elif channel == "Channel::WebWidget":
        if sender.identifier:
            return f"identifier:{sender.identifier}"
        if sender.email:
            return f"email:{sender.email.strip().lower()}"
    elif channel in _SOURCE_ID_CHANNELS and source_id:
        return f"{_SOURCE_ID_CHANNELS[channel]}:{source_id}"
    return f"contact:{sender.id}" if sender.id is not None else None


def speaker(message: views.Message) -> Speaker:
    """Direction and kind of a message's author (contacts have no `type` key in webhooks)."""
    incoming = message.message_type in ("incoming", 0)
    direction = Direction.INBOUND if incoming else Direction.OUTBOUND
    sender = message.sender
    if sender is None:
        return Speaker(direction=direction, kind=SenderKind.SYSTEM, id=None)
    if sender.type == "user":
        return Speaker(direction=direction, kind=SenderKind.USER, id=sender.id)
    if sender.type == "agent_bot":
        return Speaker(direction=direction, kind=SenderKind.AGENT_BOT, id=sender.id)
    if incoming:
        return Speaker(direction=direction, kind=SenderKind.CONTACT, id=sender.id)
    return Speaker(direction=direction, kind=SenderKind.SYSTEM, id=sender.id)


def is_customer_turn_input(message: views.Message) -> bool:
    """Only a public incoming message created by the customer asks for an answer."""
    return (
        message.event == "message_created"
        and message.message_type == "incoming"
        and not message.private
    )


def handler_after_snapshot(
    current: Handler,
    *,
    previous_status: str | None,
    status: str | None,
    assignee_type: str | None,
) -> Handler:
    """Who handles the conversation once Chatwoot shows this status and assignee.

    A human assignee or a move from pending to open (the bot hand-off) gives it to humans;
    an agent-bot assignee or a resolve gives it back to the bot; otherwise nothing changes.
    """
    if assignee_type == "User":
        return Handler.HUMAN
    if assignee_type == "AgentBot":
        return Handler.BOT
    if status == "resolved":
        return Handler.BOT
    if previous_status == "pending" and status == "open":
        return Handler.HUMAN
    return current


def handler_after_message(current: Handler, message: views.Message) -> Handler:
    """A public reply by a human agent takes the conversation over."""
    who = speaker(message)
    if who.kind is SenderKind.USER and who.direction is Direction.OUTBOUND and not message.private:
        return Handler.HUMAN
    return current
