"""Ack, retry or dead-letter: the pure decision after a handler ran."""

from __future__ import annotations

import pytest

from consumers import decisions
from consumers.errors import ChatwootError, Outage, PermanentError, RetryableError, StoreError
from ingress.errors import EntryDecodeError


@pytest.mark.parametrize(
    ("error", "deliveries", "expected"),
    [
        pytest.param(None, 1, decisions.Ack, id="success"),
        pytest.param(None, 99, decisions.Ack, id="late-success"),
        pytest.param(EntryDecodeError("x"), 1, decisions.Dead, id="undecodable-at-once"),
        pytest.param(PermanentError("x"), 1, decisions.Dead, id="permanent-at-once"),
        pytest.param(ChatwootError("404", retryable=False), 1, decisions.Dead, id="chatwoot-404"),
        pytest.param(RetryableError("x"), 1, decisions.Retry, id="retryable"),
        pytest.param(StoreError("down", retryable=True), 4, decisions.Retry, id="store-down"),
        pytest.param(StoreError("bad", retryable=False), 1, decisions.Dead, id="store-bad-data"),
        pytest.param(ValueError("bug"), 1, decisions.Dead, id="our-bug-at-once"),
        pytest.param(KeyError("x"), 1, decisions.Dead, id="key-error-is-a-bug"),
        pytest.param(RetryableError("x"), 5, decisions.Dead, id="last-delivery"),
        pytest.param(TimeoutError(), 99, decisions.Retry, id="timeout-waits"),
    ],
)
def test_decide(error: BaseException | None, deliveries: int, expected: type) -> None:
    """Decode, permanent and bug errors die at once; transient ones retry until max."""
    assert isinstance(decisions.decide(error, deliveries=deliveries, max_deliveries=5), expected)


def test_dead_carries_reason_and_error() -> None:
    """A dead decision says why, with the error's type and text."""
    dead = decisions.decide(EntryDecodeError("field `x`"), deliveries=1, max_deliveries=5)
    assert dead == decisions.Dead(reason="undecodable", error="EntryDecodeError: field `x`")
    capped = decisions.decide(RetryableError("slow"), deliveries=5, max_deliveries=5)
    assert capped == decisions.Dead(reason="max_deliveries", error="RetryableError: slow")


def _overflow() -> None:
    import datetime as dt

    dt.datetime.fromtimestamp(10**12, dt.UTC)


def test_a_bug_is_dead_with_where_it_happened() -> None:
    """Our own error on an entry is dead at once, reason `bug`, with the traceback's last line."""
    try:
        _overflow()
    except (OverflowError, ValueError, OSError) as exc:
        error = exc
    dead = decisions.decide(error, deliveries=1, max_deliveries=5)
    assert isinstance(dead, decisions.Dead)
    assert dead.reason == "bug"
    assert dead.error.startswith("File ") and "test_decisions.py:" in dead.error
    assert f"in _overflow: {type(error).__name__}: " in dead.error


@pytest.mark.parametrize(("deliveries", "dead"), [(5, False), (6, True)])
def test_exhausted_before_running(deliveries: int, dead: bool) -> None:
    """An entry reclaimed past max_deliveries (its consumer died each time) is dead unrun."""
    assert (decisions.exhausted(deliveries, 5) is not None) is dead


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(StoreError("connection refused", retryable=True, outage=True), id="pg-down"),
        pytest.param(Outage("Redis: connection reset"), id="redis-down"),
        pytest.param(ConnectionResetError("reset"), id="connection-reset"),
    ],
)
def test_outages_never_count_against_the_entry(error: Exception) -> None:
    """A dependency outage is waited out, even past max_deliveries: it is not the entry's fault."""
    decision = decisions.decide(error, deliveries=99, max_deliveries=5)
    assert decision == decisions.Retry(error=decision.error, outage=True)  # type: ignore[union-attr]
