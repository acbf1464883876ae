"""Reply retry delays and the per-account circuit breaker (pure)."""

from __future__ import annotations

import pytest

from consumers.backoff import Breaker, backoff


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        pytest.param(1, 0.5, None, 1.0, id="first-delay"),
        pytest.param(9, 0.5, None, 4.0, id="last-delay-repeats"),
        pytest.param(1, 0.0, None, 0.8, id="jitter-down"),
        pytest.param(1, 0.5, 30.0, 30.0, id="retry-after-wins"),
        pytest.param(1, 0.5, float("inf"), 3600.0, id="retry-after-inf-capped"),
        pytest.param(1, 0.5, float("nan"), 1.0, id="retry-after-nan-ignored"),
    ],
)
def test_backoff(attempt: int, rand: float, retry_after: float | None, expected: float) -> None:
    """The schedule's delay, spread by the jitter, never sooner than Retry-After (capped at 1 h)."""
    wait = backoff(attempt, (1000, 4000), jitter=0.2, rand=rand, retry_after=retry_after)
    assert wait == pytest.approx(expected)


def test_breaker_opens_at_the_threshold_then_half_opens() -> None:
    """Closed until `threshold` failures, open for `open_s`, then half-open."""
    breaker = Breaker().failed(10.0, threshold=2, open_s=5.0)
    assert breaker.state(10.0) == "closed"
    breaker = breaker.failed(11.0, threshold=2, open_s=5.0)
    assert (breaker.state(12.0), breaker.state(16.0)) == ("open", "half-open")
