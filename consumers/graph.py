"""The httpx client for the one Graph API call Switchboard makes: the owner of an Instagram
media (`GET /<version>/<media id>?fields=owner`), its failures classified like Chatwoot's.

The access token travels in the Authorization header (Graph takes `Bearer` as it takes the
`access_token` parameter), so no URL we log or raise ever holds it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx
import msgspec

from consumers import backoff
from consumers.errors import HandlerError
from consumers.faults import Fault
from ingress.settings import Secret

# meta.md: codes 4, 17, 32 and 613 are rate limits (retry later); 1 and 2 are Graph's own
# passing trouble. Anything else it refuses (100: bad id or missing permission, 190: expired
# token, 10/200-299: permissions) waiting cannot fix.
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 613})


class GraphError(HandlerError):
    """The Graph API did not tell us a media's owner; `code` is Graph's error code."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code
        self.retry_after = retry_after


class _Error(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: int | None = None
    error_subcode: int | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error


class _Owner(msgspec.Struct):
    id: str | int


class _Media(msgspec.Struct):
    owner: _Owner


def fault_of(status: int, code: int | None) -> Fault:
    """A Graph answer that is not a success: rate limits, 5xx, 408/429 and Graph's own
    trouble pass; a refusal (bad id, token, permission) is for good."""
    if code in TRANSIENT_CODES or status >= 500 or status in {408, 429}:
        return Fault.TRANSIENT
    return Fault.PERMANENT


class GraphClient:
    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        version: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.version = version
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"authorization": f"Bearer {token.reveal()}", "user-agent": "switchboard"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def owner(self, media_id: str) -> str:
        """The Instagram user id that owns `media_id` (a Graph id: digits, checked by the
        caller), or GraphError."""
        path = f"/{self.version}/{media_id}"
        try:
            response = await self._http.get(path, params={"fields": "owner"})
        except httpx.TransportError as exc:
            # A read: nothing to be ambiguous about, always safe to ask again.
            raise GraphError(f"GET {path}: {type(exc).__name__}", retryable=True) from None
        if response.is_success:
            try:
                return str(msgspec.json.decode(response.content, type=_Media).owner.id)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise GraphError(
                    f"GET {path}: no owner in the answer: {exc}", retryable=False
                ) from None
        raise _error_for(path, response)


def _error_for(path: str, response: httpx.Response) -> GraphError:
    status = response.status_code
    try:
        error: _Error | None = msgspec.json.decode(response.content, type=_ErrorBody).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = None
    code = error.code if error is not None else None
    if error is not None:
        # Graph's messages name the id and the permission, never the token.
        said = f"Graph error code {code} ({error.type}): {error.message[:200]}"
    else:
        said = f"HTTP {status} {response.text[:200]}".strip()
    fault = fault_of(status, code)
    return GraphError(
        f"GET {path}: {said}",
        retryable=fault is Fault.TRANSIENT,
        status=status,
        code=code,
        retry_after=_retry_after(response) if fault is Fault.TRANSIENT else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return backoff.bounded_retry_after(float(response.headers.get("retry-after", "")))
    except ValueError:
        return None
