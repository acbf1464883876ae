"""The Chatwoot client over httpx.MockTransport: requests sent and errors classified."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from consumers.chatwoot import ChatwootClient
from consumers.errors import ChatwootError
from ingress.settings import Secret

Responder = Callable[[httpx.Request], httpx.Response]


def client(responder: Responder, *, user_token: str | None = None) -> ChatwootClient:
    return ChatwootClient(
        "https://chat.example.com",
        Secret("bot-token"),
        user_token=Secret(user_token) if user_token else None,
        transport=httpx.MockTransport(responder),
    )


async def test_create_message_request_and_answer() -> None:
    """The create call sends the documented body and token, and returns Chatwoot's id."""
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": 77, "status": "sent", "message_type": 1})

    async with client(respond) as c:
        created = await c.create_message(3, 1042, content="hi", content_attributes={"ext_ref": "r"})
    assert created.id == 77
    [request] = seen
    assert request.url.path == "/api/v1/accounts/3/conversations/1042/messages"
    assert request.headers["api_access_token"] == "bot-token"


@pytest.mark.parametrize(
    ("response", "retryable", "ambiguous", "retry_after"),
    [
        pytest.param(httpx.Response(401, json={"error": "x"}), False, False, None, id="401"),
        pytest.param(httpx.Response(404, json={"error": "x"}), False, False, None, id="404"),
        pytest.param(httpx.Response(422, json={"error": "Invalid"}), False, False, None, id="422"),
        pytest.param(
            httpx.Response(422, json={"error": "Too many messages"}), True, False, None, id="flood"
        ),
        pytest.param(
            httpx.Response(429, text="Retry later", headers={"retry-after": "7"}),
            True,
            False,
            7.0,
            id="429",
        ),
        *(
            pytest.param(
                httpx.Response(429, headers={"retry-after": header}), True, False, bounded, id=name
            )
            for header, bounded, name in [
                ("inf", 3600.0, "retry-after-inf-capped"),
                ("1e308", 3600.0, "retry-after-huge-capped"),
                ("nan", None, "retry-after-nan-ignored"),
                ("-5", None, "retry-after-negative-ignored"),
            ]
        ),
        pytest.param(httpx.Response(403, text="no"), False, False, None, id="403"),
        pytest.param(httpx.Response(410, text="gone"), False, False, None, id="410"),
        pytest.param(httpx.Response(408, text="timeout"), True, True, None, id="408"),
        pytest.param(httpx.Response(409, text="conflict"), True, False, None, id="409"),
        pytest.param(httpx.Response(425, text="too early"), True, False, None, id="425"),
        pytest.param(httpx.Response(500, text="oops"), True, False, None, id="500"),
        pytest.param(httpx.Response(502, text="bad gateway"), True, True, None, id="502"),
        pytest.param(httpx.Response(504, text="timeout"), True, True, None, id="504"),
        pytest.param(httpx.Response(200, text="<html>"), True, True, None, id="not-json"),
    ],
)
async def test_errors_are_classified(
    response: httpx.Response, retryable: bool, ambiguous: bool, retry_after: float | None
) -> None:
    """Each of Chatwoot's answers becomes a retry, an ambiguity, or a permanent failure."""
    async with client(lambda _: response) as c:
        with pytest.raises(ChatwootError) as caught:
            await c.create_message(3, 1, content="x")
    error = caught.value
    assert (error.retryable, error.ambiguous, error.retry_after) == (
        retryable,
        ambiguous,
        retry_after,
    )


@pytest.mark.parametrize(
    ("exc", "ambiguous"),
    [
        pytest.param(httpx.ConnectError("refused"), False, id="connect"),
        pytest.param(httpx.ConnectTimeout("slow"), False, id="connect-timeout"),
        pytest.param(httpx.ReadTimeout("slow"), True, id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("reset"), True, id="reset"),
    ],
)
async def test_transport_errors(exc: Exception, ambiguous: bool) -> None:
    """A request that never left is safe to resend; one that may have landed is ambiguous."""

    def respond(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(respond) as c:
        with pytest.raises(ChatwootError) as caught:
            await c.create_message(3, 1, content="x")
    assert caught.value.retryable and caught.value.ambiguous is ambiguous


async def test_listing_needs_a_user_token() -> None:
    """Bots cannot list messages: without a user token the client says so before calling."""
    async with client(lambda _: httpx.Response(200, json={"payload": []})) as c:
        with pytest.raises(ChatwootError, match="CHATWOOT_USER_TOKEN"):
            await c.list_messages(3, 1)


async def test_listing_uses_the_user_token() -> None:
    """The list call sends the user token and `after`, and reads ext_ref back."""
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"payload": [{"id": 9, "content_attributes": {"ext_ref": "r"}}]}
        )

    async with client(respond, user_token="user-token") as c:
        [listed] = await c.list_messages(3, 1, after=5)
    assert listed.ext_ref == "r"
    assert seen[0].headers["api_access_token"] == "user-token"
    assert seen[0].url.params["after"] == "5"
