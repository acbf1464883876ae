"""What to do with a stream entry after its handler ran (pure): ack, retry later, or dead."""

from __future__ import annotations

import msgspec

from consumers.errors import HandlerError
from ingress.errors import EntryDecodeError


class Ack(msgspec.Struct, frozen=True):
    """Done (or nothing more can be done here): acknowledge."""


class Retry(msgspec.Struct, frozen=True):
    """Leave it pending: the group reclaims it after `claim_idle_ms` and tries again; or, in
    an outage, the runner keeps it and tries again once the dependency answers."""

    error: str
    outage: bool = False


class Dead(msgspec.Struct, frozen=True):
    """Copy it to the dead stream with the reason, then acknowledge."""

    reason: str
    error: str


Decision = Ack | Retry | Dead


def decide(error: BaseException | None, *, deliveries: int, max_deliveries: int) -> Decision:
    """The fate of an entry delivered `deliveries` times whose handler raised `error` (or not)."""
    if error is None:
        return Ack()
    text = f"{type(error).__name__}: {error}"[:2000]
    if isinstance(error, EntryDecodeError):
        return Dead(reason="undecodable", error=text)
    if isinstance(error, HandlerError) and error.outage:
        return Retry(error=text, outage=True)  # not the entry's fault: never counts
    retryable = error.retryable if isinstance(error, HandlerError) else True
    if not retryable:
        return Dead(reason="permanent", error=text)
    if deliveries >= max_deliveries:
        return Dead(reason="max_deliveries", error=text)
    return Retry(error=text)


def exhausted(deliveries: int, max_deliveries: int) -> Dead | None:
    """An entry reclaimed after more deliveries than allowed is dead before it runs again.

    This is how a poison entry that kills its consumer (no exception to catch) still ends.
    """
    if deliveries > max_deliveries:
        return Dead(reason="max_deliveries", error=f"delivered {deliveries} times")
    return None


# -- replies: when to try again ------------------------------------------------------------------


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
