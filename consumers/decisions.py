"""What to do with a stream entry after its handler ran (pure): ack, retry later, or dead."""

from __future__ import annotations

import msgspec

from consumers import faults
from consumers.faults import Fault
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
    fault = faults.of_error(error)
    if fault is Fault.OUTAGE:
        return Retry(error=text, outage=True)  # not the entry's fault: never counts
    if fault is Fault.BUG:
        return Dead(reason="bug", error=faults.where(error)[:2000])
    if fault is Fault.PERMANENT:
        undecodable = isinstance(error, EntryDecodeError)
        return Dead(reason="undecodable" if undecodable else "permanent", error=text)
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
