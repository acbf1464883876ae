"""Errors raised by the consumers; `retryable` tells the runner whether to try again."""

from __future__ import annotations

from ingress.errors import SwitchboardError


class HandlerError(SwitchboardError):
    """A handler could not finish an entry.

    `outage`: a dependency (PostgreSQL, Redis) is unreachable. That says nothing about the
    entry, so the runner waits the outage out instead of counting it as a failed delivery.
    """

    retryable = True
    outage = False


class RetryableError(HandlerError):
    """Worth another delivery later (a dependency is down, a timeout)."""


class Outage(RetryableError):
    """A dependency is unreachable (raised for Redis; the store sets `outage` itself)."""

    outage = True


class PermanentError(HandlerError):
    """Trying again cannot help: the entry goes to the dead stream now."""

    retryable = False


class StoreError(HandlerError):
    """PostgreSQL failed; translated from the driver's error at the adapter."""

    def __init__(self, message: str, *, retryable: bool, outage: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.outage = outage


class ChatwootError(HandlerError):
    """Chatwoot's API did not accept a call.

    `ambiguous`: the request may have been applied (a timeout after sending, a reset): check
    before sending again. `retry_after`: seconds Chatwoot asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        ambiguous: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class AppError(HandlerError):
    """A worker app did not take a push (see consumers/appclient.py for what retries)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        ambiguous: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.ambiguous = ambiguous
        self.retry_after = retry_after
