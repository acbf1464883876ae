"""The deliverer's decision (pure): what to do next with a reply, from what is known."""

from __future__ import annotations

import datetime as dt

import pytest

from consumers import steps
from consumers.statuses import Outbound
from consumers.store import OutboundRow
from ingress.topology import DeliverySpec

NOW = dt.datetime(2026, 6, 18, 9, 0, tzinfo=dt.UTC)
SPEC = DeliverySpec(retry_ms=(1_000, 5_000), jitter=0.0)


def row(
    status: Outbound = Outbound.QUEUED,
    *,
    attempts: int = 0,
    due: dt.datetime | None = NOW,
    kind: str = "message",
    conversation: int | None = 1046,
    known: int | None = None,
) -> OutboundRow:
    return OutboundRow(
        ref="r", account_id=3, kind=kind, turn=None, status=status, attempts=attempts,
        chatwoot_message_id=None, chatwoot_conversation_id=conversation, next_attempt_at=due,
        known_through=known if known is not None or status is Outbound.QUEUED else 900,
    )  # fmt: skip


LATER = NOW + dt.timedelta(seconds=30)
SENDING = row(Outbound.SENDING, attempts=1)
# Failed after an attempt (claimed once: `known_through` set), queued again by `dlq replay`.
REQUEUED = row(known=900)
GO, WAIT = steps.Go(), steps.Wait(2.0, "rate limited")
UNKNOWN = steps.Unknown("GET messages: 500")


@pytest.mark.parametrize(
    ("outbox", "gate", "proof", "limit", "can_list", "expected"),
    [
        pytest.param(row(Outbound.SENT), None, None, None, True,
                     steps.Skip("already sent"), id="posted-already"),
        pytest.param(row(Outbound.SUPPRESSED), None, None, None, True,
                     steps.Skip("already suppressed"), id="suppressed-already"),
        pytest.param(row(due=LATER), None, None, None, True,
                     steps.Skip("not due"), id="retry-not-due"),
        pytest.param(row(Outbound.SENDING, attempts=1, due=LATER), None, None, None, True,
                     steps.Skip("not due"), id="lease-held-elsewhere"),
        pytest.param(row(), "a human handles the conversation", None, None, True,
                     steps.Suppress("a human handles the conversation"), id="gate-closed"),
        pytest.param(row(), None, None, None, True, steps.AskLimits(), id="queued-asks-limits"),
        pytest.param(row(due=None), None, None, GO, True, steps.Attempt(), id="queued-no-time"),
        pytest.param(row(), None, None, GO, True, steps.Attempt(), id="queued-go"),
        pytest.param(row(), None, None, WAIT, True,
                     steps.Hold(NOW + dt.timedelta(seconds=2), "rate limited"), id="queued-wait"),
        pytest.param(SENDING, "a human handles the conversation", steps.Absent(), GO, True,
                     steps.Attempt(), id="sending-not-gated-again"),
        pytest.param(SENDING, None, steps.Landed(77), None, True,
                     steps.Recovered(77), id="echo-proves-it-landed"),
        pytest.param(SENDING, None, None, None, True, steps.AskLimits(),
                     id="sending-asks-limits-first"),
        pytest.param(SENDING, None, None, WAIT, True,
                     steps.Hold(NOW + dt.timedelta(seconds=2), "rate limited"),
                     id="breaker-open-no-check"),
        pytest.param(SENDING, None, None, GO, True, steps.CheckProof(), id="sending-checks"),
        pytest.param(SENDING, None, None, None, False, steps.AskLimits(),
                     id="no-user-token-no-check"),
        pytest.param(row(Outbound.SENDING, attempts=1, kind="handoff"), None, None, None, True,
                     steps.AskLimits(), id="toggles-need-no-proof"),
        pytest.param(row(Outbound.SENDING, attempts=1, conversation=None), None, None, None,
                     True, steps.AskLimits(), id="no-conversation-to-list"),
        pytest.param(row(kind="hold"), None, None, None, True, steps.Attempt(),
                     id="hold-asks-no-limit"),
        pytest.param(SENDING, None, steps.Absent(), GO, True, steps.Attempt(), id="absent-go"),
        pytest.param(SENDING, None, UNKNOWN, GO, True,
                     steps.Hold(NOW + dt.timedelta(seconds=1),
                                "cannot tell whether attempt 1 landed: GET messages: 500"),
                     id="failed-check-holds"),
        pytest.param(row(Outbound.SENDING, attempts=2), None, UNKNOWN, GO, True,
                     steps.Hold(NOW + dt.timedelta(seconds=5),
                                "cannot tell whether attempt 2 landed: GET messages: 500"),
                     id="failed-check-backs-off"),
        pytest.param(REQUEUED, "a human handles the conversation", None, None, True,
                     steps.Suppress("a human handles the conversation"), id="requeued-gated"),
        pytest.param(REQUEUED, None, steps.Landed(78), None, True,
                     steps.Recovered(78), id="requeued-echo-proves-it-landed"),
        pytest.param(REQUEUED, None, None, GO, True, steps.CheckProof(),
                     id="requeued-checks-before-posting"),
        pytest.param(REQUEUED, None, steps.Absent(), GO, True, steps.Attempt(),
                     id="requeued-absent-go"),
        pytest.param(REQUEUED, None, UNKNOWN, GO, True,
                     steps.Hold(NOW + dt.timedelta(seconds=1),
                                "cannot tell whether the attempt before the replay landed: "
                                "GET messages: 500"),
                     id="requeued-failed-check-holds"),
        pytest.param(REQUEUED, None, None, None, False,
                     steps.AwaitEcho(NOW + dt.timedelta(milliseconds=SPEC.echo_wait_ms)),
                     id="requeued-no-user-token-waits-for-the-echo"),
        pytest.param(row(known=900, kind="typing_on"), None, None, GO, False, steps.Attempt(),
                     id="requeued-toggle-redone"),
    ],
)  # fmt: skip
def test_next_step(
    outbox: OutboundRow,
    gate: str | None,
    proof: steps.Proof | None,
    limit: steps.Limit | None,
    can_list: bool,
    expected: steps.Step,
) -> None:
    """Each situation of a reply gives one next step."""
    step = steps.next_step(
        outbox, now=NOW, gate=gate, proof=proof, limit=limit, can_list=can_list, spec=SPEC,
        rand=0.5,
    )  # fmt: skip
    assert step == expected


def test_a_decision_never_asks_twice() -> None:
    """Given what it asked for, the decision moves on: the deliverer's loop ends."""
    asked = steps.next_step(SENDING, now=NOW, gate=None, proof=None, limit=None,
                            can_list=True, spec=SPEC, rand=0.0)  # fmt: skip
    assert asked == steps.AskLimits()
    then = steps.next_step(SENDING, now=NOW, gate=None, proof=None, limit=GO,
                           can_list=True, spec=SPEC, rand=0.0)  # fmt: skip
    assert then == steps.CheckProof()
    final = steps.next_step(SENDING, now=NOW, gate=None, proof=steps.Absent(), limit=GO,
                            can_list=True, spec=SPEC, rand=0.0)  # fmt: skip
    assert final == steps.Attempt()
