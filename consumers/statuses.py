"""Message statuses (pure): enums with named groups, and the only legal ways forward."""

from __future__ import annotations

import enum


class IllegalTransition(ValueError):
    pass


class Inbound(enum.StrEnum):
    RECEIVED = "received"
    READ = "read"


class Outbound(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


OUTBOUND_PROGRESS = (
    Outbound.QUEUED,
    Outbound.SENDING,
    Outbound.SENT,
    Outbound.DELIVERED,
    Outbound.READ,
)
OUTBOUND_TERMINAL = frozenset({Outbound.READ, Outbound.FAILED, Outbound.SUPPRESSED})
# Chatwoot has the message: nothing is ever posted again for this ref.
OUTBOUND_POSTED = frozenset({Outbound.SENT, Outbound.DELIVERED, Outbound.READ})
OUTBOUND_DONE = OUTBOUND_POSTED | OUTBOUND_TERMINAL


def advance(current: Outbound, new: Outbound) -> Outbound:
    """The status after `new` is reported, or IllegalTransition.

    Receipts arrive late and twice: a report at or behind the current step along the progress
    line is no move at all (the current status is kept), never a move backwards.
    """
    if current in OUTBOUND_TERMINAL - {Outbound.READ} or (
        current is Outbound.READ and new not in OUTBOUND_PROGRESS
    ):
        if new is current:
            return current
        raise IllegalTransition(f"outbound status {current} is final, cannot become {new}")
    if new is Outbound.FAILED:
        return new
    if new is Outbound.SUPPRESSED:
        if current is not Outbound.QUEUED:
            raise IllegalTransition(f"only a queued reply can be suppressed, not a {current} one")
        return new
    if OUTBOUND_PROGRESS.index(new) <= OUTBOUND_PROGRESS.index(current):
        return current
    return new


def advance_or_keep(current: Outbound, reported: Outbound) -> Outbound:
    """`advance` for reports from Chatwoot, which may contradict a final status of ours (a
    receipt for a reply we marked failed): the final status stands, the report is ignored."""
    try:
        return advance(current, reported)
    except IllegalTransition:
        return current


def from_chatwoot(status: str | None) -> Outbound | None:
    """Chatwoot's message status (sent|delivered|read|failed) as ours."""
    try:
        return Outbound(status) if status in ("sent", "delivered", "read", "failed") else None
    except ValueError:
        return None


def requeue(current: Outbound) -> Outbound:
    """An operator's replay of a reply that failed for good (`switchboard dlq replay`): the one
    move backwards, explicit and named so that nothing else can make it. Only `failed` may."""
    if current is not Outbound.FAILED:
        raise IllegalTransition(f"only a failed reply can be queued again, not a {current} one")
    return Outbound.QUEUED
