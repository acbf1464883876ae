"""When to try a reply again (pure): the retry schedule with jitter, and the circuit breaker."""

from __future__ import annotations

import math

import msgspec

# The longest Retry-After honoured: past it (or a value that is not a finite, non-negative
# number) a reply would wait for ever, or `now + timedelta(seconds=...)` would overflow.
RETRY_AFTER_MAX_S = 3600.0


def bounded_retry_after(value: float | None) -> float | None:
    """A server's Retry-After in seconds as we honour it: finite, 0 to RETRY_AFTER_MAX_S;
    NaN or a negative value is no advice at all."""
    if value is None or math.isnan(value) or value < 0:
        return None
    return min(value, RETRY_AFTER_MAX_S)


def backoff(
    attempt: int,
    schedule: tuple[int, ...],
    *,
    jitter: float,
    rand: float,
    retry_after: float | None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the schedule's delay
    (its last one repeating) spread by ±`jitter` using `rand` in [0, 1), and never sooner
    than Chatwoot's Retry-After."""
    base = schedule[min(attempt, len(schedule)) - 1] / 1000
    spread = base * (1 + jitter * (2 * rand - 1))
    return max(spread, bounded_retry_after(retry_after) or 0.0)


class Breaker(msgspec.Struct, frozen=True, kw_only=True):
    """One account's circuit breaker: consecutive failures, and until when it stays open."""

    failures: int = 0
    open_until: float = 0.0

    def state(self, now: float) -> str:
        if not self.open_until:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def failed(self, now: float, *, threshold: int, open_s: float) -> Breaker:
        failures = self.failures + 1
        if failures >= threshold:
            return Breaker(failures=failures, open_until=now + open_s)
        return Breaker(failures=failures, open_until=self.open_until)
