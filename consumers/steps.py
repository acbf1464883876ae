"""What the deliverer does next with a reply (pure).

The deliverer reads the outbox row, gathers what needs the network (proof that an earlier
attempt landed, the breaker and the rate limits) outside any transaction, and writes the
decision back in a short one. This module is the decision: it asks for what it lacks
(`CheckProof`, `AskLimits`) and the deliverer asks again once it has it.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import msgspec

from consumers import backoff, statuses
from consumers.statuses import Outbound
from ingress.events import OutboundKind
from ingress.topology import DeliverySpec


class Row(Protocol):
    """What the decision reads of an outbox row (the store's `OutboundRow`)."""

    @property
    def status(self) -> Outbound: ...
    @property
    def attempts(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def chatwoot_conversation_id(self) -> int | None: ...
    @property
    def next_attempt_at(self) -> dt.datetime | None: ...
    @property
    def known_through(self) -> int | None: ...


# -- what the deliverer found out ------------------------------------------------------------


class Landed(msgspec.Struct, frozen=True):
    """Chatwoot has the reply (our echo, or its message list): nothing is posted again."""

    message_id: int | None


class Absent(msgspec.Struct, frozen=True):
    """Chatwoot's message list has no message with our ref: safe to post."""


class Unknown(msgspec.Struct, frozen=True):
    """The check could not be made (5xx, reset, 401...): posting now could post twice."""

    why: str


Proof = Landed | Absent | Unknown


class Go(msgspec.Struct, frozen=True):
    """The breaker lets the call through and both token buckets gave a token."""


class Wait(msgspec.Struct, frozen=True):
    seconds: float
    why: str


Limit = Go | Wait

# -- what to do --------------------------------------------------------------------------------


class Skip(msgspec.Struct, frozen=True):
    """Nothing to do now: done already, or not due (a retry later, a lease held elsewhere)."""

    why: str


class Suppress(msgspec.Struct, frozen=True):
    reason: str


class Recovered(msgspec.Struct, frozen=True):
    """An earlier attempt landed after all: record it, post nothing."""

    message_id: int | None


class Hold(msgspec.Struct, frozen=True):
    """No attempt before `until`; no attempt is counted."""

    until: dt.datetime
    why: str


class Attempt(msgspec.Struct, frozen=True):
    """Claim the reply (`sending`, with a lease) and make one attempt."""


class AwaitEcho(msgspec.Struct, frozen=True):
    """A reply queued again after an attempt that may have landed, and no message list to
    ask: mark it `sending` (no attempt counted) and give its echo until `until` to come, as
    after an ambiguous failure; then it is attempted like any `sending` reply."""

    until: dt.datetime


class CheckProof(msgspec.Struct, frozen=True):
    """Ask Chatwoot's message list whether an earlier attempt landed, then decide again."""


class AskLimits(msgspec.Struct, frozen=True):
    """Ask the breaker and the token buckets, then decide again."""


Step = Skip | Suppress | Recovered | Hold | Attempt | AwaitEcho | CheckProof | AskLimits


def next_step(
    row: Row,
    *,
    now: dt.datetime,
    gate: str | None,
    proof: Proof | None,
    limit: Limit | None,
    can_list: bool,
    spec: DeliverySpec,
    rand: float,
) -> Step:
    """The next step for a reply.

    `gate`: why the gates close for it (None: open); `proof`: what is known of an earlier
    attempt (None: not checked); `limit`: the breaker's and rate limits' answer (None: not
    asked); `can_list`: a user token is configured; `rand` in [0, 1) spreads backoff.
    """
    if row.status in statuses.OUTBOUND_DONE:
        return Skip(why=f"already {row.status}")
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        return Skip(why="not due")  # a retry not due yet, or an attempt under way elsewhere
    if row.status is Outbound.QUEUED and gate is not None:
        return Suppress(reason=gate)
    if row.kind == OutboundKind.HOLD:
        return Attempt()  # sends nothing to Chatwoot: no limit, no check applies
    unsure = attempted_before(row)
    if unsure and isinstance(proof, Landed):
        return Recovered(message_id=proof.message_id)
    if row.status is Outbound.QUEUED and unsure and proof is None and not can_list:
        if row.kind == OutboundKind.MESSAGE:  # toggles are harmless to redo
            return AwaitEcho(until=now + dt.timedelta(milliseconds=spec.echo_wait_ms))
    # The breaker and the rate limits come before the check: the list is a call too.
    if limit is None:
        return AskLimits()
    if isinstance(limit, Wait):
        return Hold(until=now + dt.timedelta(seconds=limit.seconds), why=limit.why)
    if unsure and proof is None and can_list and _listable(row):
        return CheckProof()
    if unsure and isinstance(proof, Unknown):
        wait = backoff.backoff(
            max(row.attempts, 1), spec.retry_ms, jitter=spec.jitter, rand=rand, retry_after=None
        )
        which = f"attempt {row.attempts}" if row.attempts else "the attempt before the replay"
        why = f"cannot tell whether {which} landed: {proof.why}"
        return Hold(until=now + dt.timedelta(seconds=wait), why=why)
    return Attempt()


def attempted_before(row: Row) -> bool:
    """Whether an earlier attempt may have reached Chatwoot: one under way or ambiguous
    (`sending`), or a reply queued again by an operator after failing (its claim set
    `known_through`): its last attempt may have landed after all (a 504 after the save)."""
    if row.status is Outbound.SENDING:
        return True
    return row.status is Outbound.QUEUED and row.known_through is not None


def _listable(row: Row) -> bool:
    """Only a message can be found in the list (toggles are idempotent: redoing them is
    harmless), and only in a conversation we know."""
    return row.kind == OutboundKind.MESSAGE and row.chatwoot_conversation_id is not None
