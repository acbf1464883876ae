"""The worker apps' client: one signed POST to the checked address, its answer classified."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from consumers import appclient, egress, signing
from consumers.errors import AppError

SECRET = signing.new_secret(bytes(range(32)))
POLICY = egress.Policy()


async def public(host: str, port: int) -> Sequence[str]:
    return ["93.184.215.14"]


async def inward(host: str, port: int) -> Sequence[str]:
    return ["10.0.0.7"]


def client(handler: object, resolve: egress.Resolver = public) -> appclient.AppClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return appclient.AppClient(policy=POLICY, resolve=resolve, transport=transport)


async def post(
    c: appclient.AppClient, url: str = "https://bot.example.com/turns"
) -> appclient.AppAnswer:
    async with c:
        return await c.post(url, SECRET, msg_id="t-1", timestamp=1700000000, body=b'{"a":1}',
                            timeout_s=5)  # fmt: skip


async def test_a_signed_post_to_the_checked_address() -> None:
    """The request goes to the resolved address, with the name in Host and TLS, signed."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"replies": []})

    answer = await post(client(handler))
    assert answer.status == 200 and answer.body == b'{"replies":[]}'
    request = seen[0]
    assert request.url.host == "93.184.215.14"
    assert request.headers["host"] == "bot.example.com"
    assert request.extensions["sni_hostname"] == "bot.example.com"
    assert signing.verify([SECRET], request.headers, request.content, now=1700000000)


async def test_an_inward_address_is_refused_before_any_request() -> None:
    """DNS that now points inward: refused for good, nothing sent."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with pytest.raises(AppError) as caught:
        await post(client(handler, resolve=inward))
    assert not caught.value.retryable and not seen


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *(pytest.param(s, False, id=str(s)) for s in (400, 401, 403, 404, 410, 422, 405, 301)),
        *(pytest.param(s, True, id=str(s)) for s in (408, 409, 425, 429, 500, 502, 503, 504)),
    ],
)
async def test_statuses_are_classified(status: int, retryable: bool) -> None:
    """2xx answers; the permanent 4xx (and redirects) refuse; the rest is retried."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"location": "http://10.0.0.1/"})

    with pytest.raises(AppError) as caught:
        await post(client(handler))
    assert caught.value.retryable is retryable
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param("1e308", 3600.0, id="capped"),
        pytest.param("-3", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", None, id="http-date"),
    ],
)
async def test_retry_after_is_honoured_and_bounded(header: str, expected: float | None) -> None:
    """A 429's Retry-After travels with the error, bounded."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after": header})

    with pytest.raises(AppError) as caught:
        await post(client(handler))
    assert caught.value.retry_after == expected


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        pytest.param(httpx.ConnectError("refused"), False, id="connect"),
        pytest.param(httpx.ReadTimeout("slow"), True, id="read-timeout"),
        pytest.param(httpx.RemoteProtocolError("reset"), True, id="reset"),
    ],
)
async def test_transport_errors_are_transient(error: Exception, ambiguous: bool) -> None:
    """No answer is worth another try; after sending, it may have been taken (ambiguous)."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(AppError) as caught:
        await post(client(handler))
    assert caught.value.retryable and caught.value.ambiguous is ambiguous


async def test_an_oversized_answer_is_refused() -> None:
    """An answer past the cap is not read into memory."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * (appclient.MAX_ANSWER_BYTES + 1))

    with pytest.raises(AppError, match="larger than"):
        await post(client(handler))
