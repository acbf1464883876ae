"""When to try a reply again (pure): the retry schedule with jitter, and the circuit breaker."""

from __future__ import annotations

import msgspec


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
    return max(spread, retry_after or 0.0)


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
