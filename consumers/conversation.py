"""The conversation state machine (pure): identity, who speaks, and who handles a conversation."""

from __future__ import annotations

import datetime as dt
import enum
import math

import msgspec

from ingress import views
from ingress.topology import Route


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


def turn_id(account: int, conversation: int, through: int) -> str:
    """A turn's id: stable for a burst, so a turn emitted twice (after a crash) is one turn."""
    return f"{account}:{conversation}:{through}"


def turn_through(turn: str | None) -> int | None:
    """The last customer message a turn covers, read back from its id (None: not ours)."""
    parts = (turn or "").split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return int(parts[2])
    return None


def is_customer_turn_input(message: views.Message) -> bool:
    """Only a public incoming message created by the customer asks for an answer."""
    return (
        message.event == "message_created"
        and message.message_type == "incoming"
        and not message.private
    )


# -- who handles the conversation ------------------------------------------------------------
#
# Chatwoot delivers events in any order, so "who handles it" cannot be a running state that
# each event edits. Each event instead contributes timestamped signals ("a human took it at t",
# "it came back to the bot at t"); the conversation keeps the latest time of each kind, and
# the later one wins. Keeping a maximum is order-independent and idempotent, so any order and
# any duplication of the same events gives the same handler.
#
# A signal is dated by the change it reports, never by the snapshot that still shows it: a
# snapshot's `updated_at` grows with every change (a message, a label), so a human assigned
# long ago and still shown on a reopened conversation would otherwise look like a fresh
# hand-off, and win over the reopen that gave the conversation back to the bot. A change is
# dated where Chatwoot dates it: `changed_attributes` (conversation_updated), the new status
# of conversation_status_changed, a human's own message. What a snapshot merely shows is
# dated at the conversation's `created_at`, the earliest it can be true: it decides only
# when nothing dated says otherwise, and is the same whichever snapshot brings it.


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    handler: Handler
    at: float
    why: str


# Events whose snapshot status is the change the event reports (changed_attributes is null).
_STATUS_EVENTS = {"conversation_status_changed", "conversation_opened", "conversation_resolved"}


def snapshot_signals(
    view: views.Conversation,
    *,
    event: str,
    changed: list[dict[str, object]] | None,
    policy: Route,
) -> list[Signal]:
    """What a conversation event says about who handles it: each change at its own time,
    the state the snapshot shows at the conversation's creation."""
    return _shown(view, policy) + _changes(view, event=event, changed=changed, policy=policy)


def _shown(view: views.Conversation, policy: Route) -> list[Signal]:
    """The snapshot's state, dated at `created_at`: an assignee already there is no hand-off."""
    at = view.created_at or 0.0
    meta = view.meta or views.Meta()
    out: list[Signal] = []
    if meta.assignee_type == "User":
        out.append(Signal(handler=Handler.HUMAN, at=at, why="shown assigned to a human"))
    elif meta.assignee_type == "AgentBot" and policy.return_on_bot_assignment:
        out.append(Signal(handler=Handler.BOT, at=at, why="shown assigned to the bot"))
    if view.status == "resolved" and policy.return_on_resolve:
        out.append(Signal(handler=Handler.BOT, at=at, why="shown resolved"))
    if view.status == "open" and meta.assignee is None and policy.open_unassigned == "human":
        out.append(Signal(handler=Handler.HUMAN, at=at, why="shown open and unassigned"))
    return out


def _changes(
    view: views.Conversation,
    *,
    event: str,
    changed: list[dict[str, object]] | None,
    policy: Route,
) -> list[Signal]:
    """The changes the event reports, at the snapshot's `updated_at` (the time of the change
    in conversation_updated, which carries it in `changed_attributes.updated_at` too)."""
    # The change's own time when it says it: a snapshot may show a later state than its event.
    stamp = _change(changed, "updated_at")
    current = stamp[1] if stamp is not None else None
    changed_at = epoch(current) if isinstance(current, str | int | float) else None
    at = changed_at or view.updated_at or view.created_at or 0.0
    meta = view.meta or views.Meta()
    out: list[Signal] = []
    status = _change(changed, "status")
    if status is None and event in _STATUS_EVENTS:
        status = (None, view.status)
    before, after = status if status is not None else (None, None)
    if after == "pending":  # Chatwoot's bot queue: the bot answers
        out.append(Signal(handler=Handler.BOT, at=at, why="moved to pending"))
    elif after == "resolved" and policy.return_on_resolve:
        out.append(Signal(handler=Handler.BOT, at=at, why="resolved"))
    elif after == "open" and (before == "pending" or event == "conversation_opened"):
        out.append(Signal(handler=Handler.HUMAN, at=at, why="moved from pending to open"))
    elif after == "open" and before in ("resolved", "snoozed") and meta.assignee_type == "User":
        # Reopened by someone else with a human shown: theirs again (design.md §4). Only a
        # move into `pending` gives it back to the bot.
        out.append(Signal(handler=Handler.HUMAN, at=at, why="reopened with a human assigned"))
    user = _change(changed, "assignee_id")
    agent_bot = _change(changed, "assignee_agent_bot_id")
    if user is not None and user[1] is not None:
        out.append(Signal(handler=Handler.HUMAN, at=at, why="assigned to a human"))
    elif (user or agent_bot) and meta.assignee_type == "AgentBot":
        if policy.return_on_bot_assignment:
            out.append(Signal(handler=Handler.BOT, at=at, why="assigned to the bot"))
    elif (user or agent_bot or after == "open") and policy.open_unassigned == "human":
        if view.status == "open" and meta.assignee is None:
            out.append(Signal(handler=Handler.HUMAN, at=at, why="open and unassigned"))
    return out


def message_signals(message: views.Message, *, ours: bool) -> list[Signal]:
    """A human's public reply (in Chatwoot, or typed in the native WhatsApp/Instagram app,
    which arrives with no sender and `external_echo`) takes the conversation over."""
    if ours or message.private or message.message_type in ("incoming", 0):
        return []
    at = epoch(message.created_at)
    if at is None:
        return []
    who = speaker(message)
    external = bool((message.content_attributes or {}).get("external_echo"))
    if who.kind is SenderKind.USER or (message.sender is None and external):
        return [Signal(handler=Handler.HUMAN, at=at, why="a human replied")]
    return []


class Takeover(msgspec.Struct, frozen=True, kw_only=True):
    """The latest time of each kind of signal, and the handler they give."""

    human_since: float | None
    bot_since: float | None

    @property
    def handler(self) -> Handler:
        human = self.human_since if self.human_since is not None else float("-inf")
        bot = self.bot_since if self.bot_since is not None else float("-inf")
        return Handler.HUMAN if human > bot else Handler.BOT

    def merge(self, signals: list[Signal]) -> Takeover:
        human, bot = self.human_since, self.bot_since
        for signal in signals:
            if signal.handler is Handler.HUMAN:
                human = signal.at if human is None else max(human, signal.at)
            else:
                bot = signal.at if bot is None else max(bot, signal.at)
        return Takeover(human_since=human, bot_since=bot)


def _change(changed: list[dict[str, object]] | None, name: str) -> tuple[object, object] | None:
    """(previous, current) of one attribute in `changed_attributes`, None when it did not change."""
    for item in changed or []:
        value = item.get(name)
        if isinstance(value, dict):
            return value.get("previous_value"), value.get("current_value")
    return None


def epoch(value: str | int | float | None) -> float | None:
    """Chatwoot times as epoch seconds: ISO strings in webhooks, numbers elsewhere."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
        try:  # an epoch as text
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None
