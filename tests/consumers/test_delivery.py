"""Ack, retry or dead-letter: the pure decision after a handler ran."""

from __future__ import annotations

import pytest

from consumers import delivery
from consumers.errors import ChatwootError, Outage, PermanentError, RetryableError, StoreError
from ingress.errors import EntryDecodeError


@pytest.mark.parametrize(
    ("error", "deliveries", "expected"),
    [
        pytest.param(None, 1, delivery.Ack, id="success"),
        pytest.param(None, 99, delivery.Ack, id="late-success"),
        pytest.param(EntryDecodeError("x"), 1, delivery.Dead, id="undecodable-at-once"),
        pytest.param(PermanentError("x"), 1, delivery.Dead, id="permanent-at-once"),
        pytest.param(ChatwootError("404", retryable=False), 1, delivery.Dead, id="chatwoot-404"),
        pytest.param(RetryableError("x"), 1, delivery.Retry, id="retryable"),
        pytest.param(StoreError("down", retryable=True), 4, delivery.Retry, id="store-down"),
        pytest.param(StoreError("bad", retryable=False), 1, delivery.Dead, id="store-bad-data"),
        pytest.param(ValueError("bug"), 1, delivery.Retry, id="unknown-error-retries"),
        pytest.param(RetryableError("x"), 5, delivery.Dead, id="last-delivery"),
        pytest.param(ValueError("bug"), 5, delivery.Dead, id="unknown-error-capped"),
    ],
)
def test_decide(error: BaseException | None, deliveries: int, expected: type) -> None:
    """Decode and permanent errors die at once; others retry until max_deliveries."""
    assert isinstance(delivery.decide(error, deliveries=deliveries, max_deliveries=5), expected)


def test_dead_carries_reason_and_error() -> None:
    """A dead decision says why, with the error's type and text."""
    dead = delivery.decide(EntryDecodeError("field `x`"), deliveries=1, max_deliveries=5)
    assert dead == delivery.Dead(reason="undecodable", error="EntryDecodeError: field `x`")
    capped = delivery.decide(RetryableError("slow"), deliveries=5, max_deliveries=5)
    assert capped == delivery.Dead(reason="max_deliveries", error="RetryableError: slow")


@pytest.mark.parametrize(("deliveries", "dead"), [(5, False), (6, True)])
def test_exhausted_before_running(deliveries: int, dead: bool) -> None:
    """An entry reclaimed past max_deliveries (its consumer died each time) is dead unrun."""
    assert (delivery.exhausted(deliveries, 5) is not None) is dead


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(StoreError("connection refused", retryable=True, outage=True), id="pg-down"),
        pytest.param(Outage("Redis: connection reset"), id="redis-down"),
    ],
)
def test_outages_never_count_against_the_entry(error: Exception) -> None:
    """A dependency outage is waited out, even past max_deliveries: it is not the entry's fault."""
    decision = delivery.decide(error, deliveries=99, max_deliveries=5)
    assert decision == delivery.Retry(error=decision.error, outage=True)  # type: ignore[union-attr]
