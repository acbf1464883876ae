"""The httpx client for worker apps: one signed POST, its answer classified like Chatwoot's.

2xx is an answer; 400/401/403/404/410/422 (and any other 4xx, and a redirect, which is never
followed: it could point anywhere) refuse this push for good; 408/409/425/429, 5xx, timeouts and
connection errors are worth another try, after the app's Retry-After (bounded) if it gave one.
Each send goes to the address `egress.check` just vetted, so a DNS answer that changed since
the app was added (or between check and connect) cannot turn a push into a request inward.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import httpx
import msgspec

from consumers import backoff, egress, signing
from consumers.errors import AppError

# An inline answer holds a few replies; more than this is not an answer we will parse.
MAX_ANSWER_BYTES = 1024 * 1024
PERMANENT = frozenset({400, 401, 403, 404, 410, 422})
TRANSIENT = frozenset({408, 409, 425, 429})


class AppAnswer(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    content_type: str


async def system_resolve(host: str, port: int) -> Sequence[str]:
    """The addresses `host` resolves to (the system's resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AppClient:
    def __init__(
        self,
        *,
        policy: egress.Policy,
        resolve: egress.Resolver = system_resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.resolve = resolve
        # No redirects (a 3xx is an answer: permanent), no proxies from the environment (the
        # checked address must be the one connected to), a fresh connection pool per client.
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)

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

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(
        self,
        url: str,
        secret: str,
        *,
        msg_id: str,
        timestamp: int,
        body: bytes,
        timeout_s: float,
    ) -> AppAnswer:
        """POST `body` signed with `secret`; the answer if 2xx, else AppError."""
        try:
            target = await egress.check(url, self.policy, self.resolve)
        except egress.EgressError as exc:
            raise AppError(str(exc), retryable=False) from None
        headers = {
            **signing.headers(secret, msg_id, timestamp, body),
            "content-type": "application/json",
            "host": _host_header(target),
            "user-agent": "switchboard",
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(timeout_s):
                return await self._send(target, headers, body, extensions, timeout_s)
        except TimeoutError:
            raise AppError(
                f"no answer within {timeout_s:g} s", retryable=True, ambiguous=True
            ) from None

    async def _send(
        self,
        target: egress.Target,
        headers: dict[str, str],
        body: bytes,
        extensions: dict[str, str],
        timeout_s: float,
    ) -> AppAnswer:
        request = self._http.build_request(
            "POST",
            target.pinned_url(),
            headers=headers,
            content=body,
            extensions={**extensions, "timeout": httpx.Timeout(timeout_s).as_dict()},
        )
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise AppError(f"cannot connect: {type(exc).__name__}", retryable=True) from None
        except httpx.TransportError as exc:
            raise AppError(
                f"no complete answer: {type(exc).__name__}", retryable=True, ambiguous=True
            ) from None
        try:
            content = await _read_capped(response)
        except httpx.TransportError as exc:
            raise AppError(
                f"the answer broke off: {type(exc).__name__}", retryable=True, ambiguous=True
            ) from None
        finally:
            await response.aclose()
        return _classify(response, content)


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise AppError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes", retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _classify(response: httpx.Response, content: bytes) -> AppAnswer:
    status = response.status_code
    if 200 <= status < 300:
        return AppAnswer(
            status=status, body=content, content_type=response.headers.get("content-type", "")
        )
    detail = content[:200].decode("utf-8", "replace")
    message = f"HTTP {status} {detail}".strip()
    if status in TRANSIENT or status >= 500:
        raise AppError(
            message, status=status, retryable=True, ambiguous=status in {408, 502, 504},
            retry_after=retry_after(response.headers.get("retry-after", "")),
        )  # fmt: skip
    if 300 <= status < 400:
        message = f"HTTP {status}: redirects are not followed (register the final URL)"
    raise AppError(message, status=status, retryable=False)


def retry_after(value: str) -> float | None:
    """Retry-After in seconds, bounded (an HTTP date is no advice we follow: clocks differ)."""
    try:
        return backoff.bounded_retry_after(float(value))
    except ValueError:
        return None


def _host_header(target: egress.Target) -> str:
    default = 443 if target.scheme == "https" else 80
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == default else f"{host}:{target.port}"
