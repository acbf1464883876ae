"""The Graph API owner lookup against httpx.MockTransport: answers, errors, the token."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from consumers.faults import Fault
from consumers.graph import GraphClient, GraphError, fault_of
from ingress.settings import Secret

TOKEN = "EAAG-secret-graph-token"


def client(handler: Callable[[httpx.Request], httpx.Response]) -> GraphClient:
    return GraphClient(
        "https://graph.test", Secret(TOKEN), version="v21.0",
        transport=httpx.MockTransport(handler),
    )  # fmt: skip


def error(status: int, code: int, message: str = "nope") -> httpx.Response:
    body = {"error": {"message": message, "type": "OAuthException", "code": code}}
    return httpx.Response(status, json=body)


async def test_owner_is_asked_with_the_token_in_a_header() -> None:
    """GET /v21.0/<media>?fields=owner, the token as a Bearer header, never in the URL."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"owner": {"id": "1784"}, "id": "179"})

    async with client(answer) as graph:
        assert await graph.owner("179") == "1784"
    [request] = seen
    assert (request.url.path, request.url.params["fields"]) == ("/v21.0/179", "owner")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)


@pytest.mark.parametrize(
    ("response", "retryable", "code"),
    [
        pytest.param(error(400, 100), False, 100, id="bad-id-or-permission"),
        pytest.param(error(400, 190), False, 190, id="expired-token"),
        pytest.param(error(403, 10), False, 10, id="permission"),
        pytest.param(error(400, 4), True, 4, id="app-rate-limit"),
        pytest.param(error(400, 17), True, 17, id="user-rate-limit"),
        pytest.param(error(400, 32), True, 32, id="page-rate-limit"),
        pytest.param(error(400, 613), True, 613, id="calls-rate-limit"),
        pytest.param(error(500, 2), True, 2, id="service"),
        pytest.param(httpx.Response(502, text="<html>bad gateway"), True, None, id="5xx-html"),
        pytest.param(httpx.Response(429), True, None, id="429"),
        pytest.param(httpx.Response(404, text="no"), False, None, id="404"),
        pytest.param(httpx.Response(200, json={"id": "1"}), False, None, id="no-owner"),
    ],
)
async def test_errors_are_classified_like_chatwoots(
    response: httpx.Response, retryable: bool, code: int | None
) -> None:
    """Rate limits, 5xx and Graph's own trouble are worth another try; a refused id, token
    or permission is not. The message names Graph's code and never holds the token."""
    async with client(lambda request: response) as graph:
        with pytest.raises(GraphError) as caught:
            await graph.owner("179")
    assert (caught.value.retryable, caught.value.code) == (retryable, code)
    if code is not None:
        assert f"Graph error code {code}" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_transport_failures_are_worth_another_try(exc: Exception) -> None:
    """A lookup is a read: any transport failure is simply tried again."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(fail) as graph:
        with pytest.raises(GraphError) as caught:
            await graph.owner("179")
    assert caught.value.retryable


def test_fault_table() -> None:
    """The classification on its own: codes win over a 400, 5xx and 408/429 pass."""
    assert fault_of(400, 613) is Fault.TRANSIENT
    assert fault_of(503, None) is Fault.TRANSIENT
    assert fault_of(400, None) is Fault.PERMANENT
    assert fault_of(400, 190) is Fault.PERMANENT
