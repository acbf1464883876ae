"""The client for the part of Chatwoot's REST API Switchboard calls.

Every failure becomes a ChatwootError saying whether to retry and whether the call may already
have taken effect (Chatwoot has no idempotency key: a retried POST posts twice unless checked).

The create-message POST, the call a backlog of replies makes by the thousand, goes through
`http1.Pool` (a keep-alive pool costing a few dozen µs of CPU a request, against httpx's 2 ms);
every other call, and every call when a transport is given (tests) or a proxy is configured in
the environment (which only httpx honours), goes through httpx. Both classify failures alike.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
import msgspec

from consumers import backoff, faults, http1
from consumers.errors import ChatwootError
from consumers.faults import Fault
from ingress.settings import Secret

T = TypeVar("T")
# Told of every call: method, path, HTTP status (None: no answer), seconds.
OnCall = Callable[[str, str, int | None, float], Awaitable[None]]
PERMANENT = {400, 401, 403, 404, 422}


class CreatedMessage(msgspec.Struct, kw_only=True):
    id: int
    status: str | None = None


class ListedMessage(msgspec.Struct, kw_only=True):
    id: int
    message_type: int | None = None
    content_attributes: dict[str, Any] | None = None

    @property
    def ext_ref(self) -> str | None:
        value = (self.content_attributes or {}).get("ext_ref")
        return value if isinstance(value, str) else None


class _Created(msgspec.Struct):
    id: int


class ApiMessage(msgspec.Struct, kw_only=True):
    """A message as the REST list renders it: int `message_type` (2: activity), epoch
    `created_at`, a `sender` with `type` (contact, user, agent_bot), none for activity."""

    id: int
    content: str | None = None
    content_type: str | None = None
    content_attributes: dict[str, Any] | None = None
    message_type: int
    private: bool = False
    status: str | None = None
    source_id: str | None = None
    created_at: float
    sender: dict[str, Any] | None = None
    attachments: list[dict[str, Any]] = []
    additional_attributes: dict[str, Any] | None = None


class ListedConversation(msgspec.Struct, kw_only=True):
    """A conversation of the list: what a webhook snapshot of it needs, epoch times."""

    id: int
    inbox_id: int | None = None
    status: str | None = None
    labels: list[str] = []
    meta: dict[str, Any] = {}
    contact_inbox: dict[str, Any] | None = None  # not in the list of stock Chatwoot
    custom_attributes: dict[str, Any] = {}
    additional_attributes: dict[str, Any] = {}
    created_at: float | None = None
    updated_at: float | None = None
    timestamp: float | None = None
    last_activity_at: float | None = None

    @property
    def activity(self) -> float:
        """When something last happened in it (epoch seconds)."""
        return self.last_activity_at or self.timestamp or self.updated_at or 0.0


class _ConversationData(msgspec.Struct):
    payload: list[ListedConversation] = []


class _ConversationList(msgspec.Struct):
    data: _ConversationData


class _ApiMessageList(msgspec.Struct):
    payload: list[ApiMessage] = []


CONVERSATIONS_PER_PAGE = 25
MESSAGES_PER_PAGE = 100


class ContactConversation(msgspec.Struct, kw_only=True):
    """One of a contact's conversations, as `GET .../contacts/{id}/conversations` lists it."""

    id: int
    inbox_id: int | None = None
    created_at: float | None = None  # epoch seconds


class _ContactConversations(msgspec.Struct):
    payload: list[ContactConversation] = []


class _MessageList(msgspec.Struct):
    payload: list[ListedMessage] = []


class ChatwootClient:
    def __init__(
        self,
        base_url: str,
        api_token: Secret,
        *,
        user_token: Secret | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self.user_token = user_token
        self.on_call = on_call  # each call's duration, for the metrics
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"api_access_token": api_token.reveal(), "user-agent": "switchboard"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )
        self._pool: http1.Pool | None = None
        self._head = b""
        if transport is None:
            self._pool, self._head = _fast_pool(base_url, api_token, timeout)
        # The path goes after the base URL's own (Chatwoot served under a prefix), as in httpx.
        self._prefix = urlsplit(base_url).path.rstrip("/").encode()

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await self._http.__aexit__(exc_type, exc, tb)

    async def create_message(
        self,
        account: int,
        conversation: int,
        *,
        content: str,
        private: bool = False,
        content_attributes: dict[str, Any] | None = None,
    ) -> CreatedMessage:
        body = {
            "content": content,
            "message_type": "outgoing",
            "private": private,
            "content_type": "text",
            "content_attributes": content_attributes or {},
        }
        path = f"/api/v1/accounts/{account}/conversations/{conversation}/messages"
        if self._pool is None:
            response = await self._call("POST", path, json=body)
            return _decode(response.content, response.status_code, CreatedMessage)
        answer = await self._post_fast(self._pool, path, msgspec.json.encode(body))
        return _decode(answer.body, answer.status, CreatedMessage)

    async def _post_fast(self, pool: http1.Pool, path: str, body: bytes) -> http1.Answer:
        """`_call("POST", ...)` through the keep-alive pool: the same errors, classified alike."""
        if self.on_call is None:
            return await self._request_fast(pool, path, body)
        started = time.perf_counter()
        status: int | None = None
        try:
            answer = await self._request_fast(pool, path, body)
            status = answer.status
            return answer
        except ChatwootError as exc:
            status = exc.status
            raise
        finally:
            await self.on_call("POST", path, status, time.perf_counter() - started)

    async def _request_fast(self, pool: http1.Pool, path: str, body: bytes) -> http1.Answer:
        head = b"POST %b%b HTTP/1.1\r\n%b" % (self._prefix, path.encode(), self._head)
        try:
            answer = await pool.request(head, body)
        except http1.HttpFailure as exc:
            # Not sent (connecting, no free connection): safe to send again. Sent, then no
            # complete answer: Chatwoot may have applied it.
            raise ChatwootError(
                f"POST {path}: {exc.kind}", retryable=True, ambiguous=exc.sent
            ) from exc
        if 200 <= answer.status < 300:
            return answer
        raise _error_for("POST", path, answer.status, answer.text, answer.headers)

    async def create_conversation(
        self, account: int, *, inbox: int, source_id: str, contact: int | None = None
    ) -> int:
        """Start a conversation with a contact (their source id in that inbox); its display id."""
        body: dict[str, Any] = {"source_id": source_id, "inbox_id": inbox}
        if contact is not None:
            body["contact_id"] = contact
        response = await self._call("POST", f"/api/v1/accounts/{account}/conversations", json=body)
        return _decode(response.content, response.status_code, _Created).id

    async def toggle_status(self, account: int, conversation: int, status: str) -> None:
        path = f"/api/v1/accounts/{account}/conversations/{conversation}/toggle_status"
        await self._call("POST", path, json={"status": status})

    async def toggle_typing(self, account: int, conversation: int, *, on: bool) -> None:
        path = f"/api/v1/accounts/{account}/conversations/{conversation}/toggle_typing_status"
        await self._call("POST", path, json={"typing_status": "on" if on else "off"})

    async def list_messages(
        self, account: int, conversation: int, *, after: int | None = None
    ) -> list[ListedMessage]:
        """Messages after an id, ascending (needs a user token: bots cannot list)."""
        if self.user_token is None:
            raise ChatwootError("listing messages needs CHATWOOT_USER_TOKEN", retryable=False)
        path = f"/api/v1/accounts/{account}/conversations/{conversation}/messages"
        params = {"after": str(after)} if after is not None else {}
        headers = {"api_access_token": self.user_token.reveal()}
        response = await self._call("GET", path, params=params, headers=headers)
        return _decode(response.content, response.status_code, _MessageList).payload

    async def list_conversations(self, account: int, page: int) -> list[ListedConversation]:
        """One page (25) of every conversation, by last activity, newest first (user token)."""
        params = {"status": "all", "sort_by": "last_activity_at_desc", "page": str(page)}
        path = f"/api/v1/accounts/{account}/conversations"
        response = await self._call("GET", path, params=params, headers=self._user_headers())
        return _decode(response.content, response.status_code, _ConversationList).data.payload

    async def message_page(
        self, account: int, conversation: int, *, after: int
    ) -> list[ApiMessage]:
        """Up to 100 messages with ids above `after`, ascending (user token): page on with
        the last id until a page comes back short."""
        path = f"/api/v1/accounts/{account}/conversations/{conversation}/messages"
        response = await self._call(
            "GET", path, params={"after": str(after)}, headers=self._user_headers()
        )
        return _decode(response.content, response.status_code, _ApiMessageList).payload

    async def profile(self, token: Secret) -> tuple[int, str]:
        """`GET /api/v1/profile` with `token`, a harmless authenticated call (for `doctor`):
        the status and the start of the body. A user's token gets 200; a valid agent bot
        token 401 "not authorized for bots"; an unknown token 401 "Invalid Access Token".
        A ChatwootError when Chatwoot cannot be reached."""
        headers = {"api_access_token": token.reveal()}
        try:
            response = await self._request("GET", "/api/v1/profile", headers=headers)
        except ChatwootError as exc:
            if exc.status is None:
                raise
            return exc.status, str(exc)
        return response.status_code, response.text[:300]

    def _user_headers(self) -> dict[str, str]:
        if self.user_token is None:
            raise ChatwootError("listing needs CHATWOOT_USER_TOKEN", retryable=False)
        return {"api_access_token": self.user_token.reveal()}

    async def contact_conversations(self, account: int, contact: int) -> list[ContactConversation]:
        """A contact's conversations (needs a user token: bots may not list them)."""
        if self.user_token is None:
            raise ChatwootError("listing conversations needs CHATWOOT_USER_TOKEN", retryable=False)
        path = f"/api/v1/accounts/{account}/contacts/{contact}/conversations"
        headers = {"api_access_token": self.user_token.reveal()}
        response = await self._call("GET", path, headers=headers)
        return _decode(response.content, response.status_code, _ContactConversations).payload

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.on_call is None:
            return await self._request(method, path, **kwargs)
        started = time.perf_counter()
        status: int | None = None
        try:
            response = await self._request(method, path, **kwargs)
            status = response.status_code
            return response
        except ChatwootError as exc:
            status = exc.status
            raise
        finally:
            await self.on_call(method, path, status, time.perf_counter() - started)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left: safe to send again.
            raise ChatwootError(f"{method} {path}: {type(exc).__name__}", retryable=True) from exc
        except httpx.TransportError as exc:
            # Sent, then no (complete) answer: Chatwoot may have applied it.
            raise ChatwootError(
                f"{method} {path}: {type(exc).__name__}", retryable=True, ambiguous=True
            ) from exc
        if response.is_success:
            return response
        raise _error_for(method, path, response.status_code, response.text, response.headers)


def _fast_pool(base_url: str, api_token: Secret, timeout: float) -> tuple[http1.Pool | None, bytes]:
    """The keep-alive pool for the create-message POST, and the headers every request of it
    carries (built once); no pool when only httpx can reach Chatwoot (a proxy, another scheme)."""
    url = urlsplit(base_url)
    host = url.hostname or ""
    if url.scheme not in {"http", "https"} or not host or url.username or url.query:
        return None, b""
    proxies = urllib.request.getproxies()
    if (proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None, b""
    token = api_token.reveal()
    if any(c in token for c in "\r\n\0"):
        return None, b""  # httpx refuses such a header: let it say so
    port = url.port or (443 if url.scheme == "https" else 80)
    context = httpx.create_ssl_context() if url.scheme == "https" else None
    pool = http1.Pool(
        host, port, size=100, timeout=timeout, connect=min(timeout, 5.0), ssl_context=context
    )  # at most as many connections as httpx's default limits open
    authority = f"[{host}]" if ":" in host else host  # an IPv6 address
    default = url.port is None or url.port == (443 if url.scheme == "https" else 80)
    head = (
        f"host: {authority if default else f'{authority}:{port}'}\r\naccept: */*\r\n"
        f"user-agent: switchboard\r\ncontent-type: application/json\r\n"
        f"api_access_token: {token}"
    ).encode("latin-1")
    return pool, head


def _error_for(
    method: str, path: str, status: int, text: str, headers: Mapping[str, str]
) -> ChatwootError:
    detail = text[:300]
    message = f"{method} {path}: {status} {detail}"
    if status == 429 or (status == 422 and "Too many messages" in detail):
        return ChatwootError(
            message, status=status, retryable=True, retry_after=_retry_after(headers)
        )
    if faults.of_http_status(status) is Fault.PERMANENT:
        return ChatwootError(message, status=status, retryable=False)
    if status in {408, 409, 425}:
        # Timed out, conflicting or too early: worth another try, and (408) maybe applied.
        return ChatwootError(message, status=status, retryable=True, ambiguous=status == 408)
    # A 5xx may come after Rails saved the message (a gateway timeout surely can).
    return ChatwootError(message, status=status, retryable=True, ambiguous=status in {502, 504})


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    # `inf`, `nan`, `-5` or `1e308` are not advice we can follow: bounded, or ignored.
    return backoff.bounded_retry_after(seconds)


def _decode(content: bytes, status: int, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.DecodeError as exc:
        raise ChatwootError(
            f"unexpected answer from Chatwoot: {exc}",
            status=status,
            retryable=True,
            ambiguous=True,
        ) from exc
