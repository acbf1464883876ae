"""Outbound status transitions: forward only, receipts late and twice."""

from __future__ import annotations

import pytest

from consumers.statuses import IllegalTransition, Outbound, advance, from_chatwoot

Q, SI, S, D, R, F, X = (
    Outbound.QUEUED,
    Outbound.SENDING,
    Outbound.SENT,
    Outbound.DELIVERED,
    Outbound.READ,
    Outbound.FAILED,
    Outbound.SUPPRESSED,
)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        pytest.param(Q, SI, SI, id="queued-sending"),
        pytest.param(SI, S, S, id="sending-sent"),
        pytest.param(Q, S, S, id="echo-before-post-returns"),
        pytest.param(S, D, D, id="sent-delivered"),
        pytest.param(D, R, R, id="delivered-read"),
        pytest.param(D, S, D, id="late-receipt-keeps-newer"),
        pytest.param(R, D, R, id="read-stays-read"),
        pytest.param(S, S, S, id="duplicate"),
        pytest.param(SI, F, F, id="sending-failed"),
        pytest.param(D, F, F, id="delivery-failure-receipt"),
        pytest.param(Q, X, X, id="queued-suppressed"),
        pytest.param(F, F, F, id="failed-repeated"),
    ],
)
def test_legal(current: Outbound, new: Outbound, expected: Outbound) -> None:
    """Moves forward, or stays where it is: never backwards."""
    assert advance(current, new) is expected


@pytest.mark.parametrize(
    ("current", "new", "message"),
    [
        pytest.param(F, S, "final", id="failed-is-final"),
        pytest.param(X, SI, "final", id="suppressed-is-final"),
        pytest.param(S, X, "only a queued reply can be suppressed", id="suppress-sent"),
        pytest.param(R, F, "final", id="read-cannot-fail"),
    ],
)
def test_illegal(current: Outbound, new: Outbound, message: str) -> None:
    """Illegal transitions raise with a message saying why."""
    with pytest.raises(IllegalTransition, match=message):
        advance(current, new)


def test_from_chatwoot() -> None:
    """Chatwoot's statuses map onto ours; anything else is no report."""
    assert [
        from_chatwoot(s) for s in ("sent", "delivered", "read", "failed", "progress", None)
    ] == [
        S,
        D,
        R,
        F,
        None,
        None,
    ]


def test_only_a_failed_reply_can_be_queued_again() -> None:
    """`requeue` is the one named move backwards (an operator's replay), from `failed` only."""
    from consumers.statuses import requeue

    assert requeue(F) is Q
    for status in (Q, SI, S, D, R, X):
        with pytest.raises(IllegalTransition):
            requeue(status)
