"""The create-message POST over the keep-alive pool (`consumers.http1`), against real sockets:
the same request, answer and error classes as through httpx (test_chatwoot.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from consumers.chatwoot import ChatwootClient
from consumers.embedded import free_port
from consumers.errors import ChatwootError
from ingress.settings import Secret

Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (head, body) -> raw answer


class Server:
    """A raw HTTP/1.1 server: what it received, and each connection it accepted."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                size = re.search(rb"content-length: (\d+)", head.lower())
                body = await reader.readexactly(int(size[1]) if size else 0)
                self.requests.append((head, body))
                raw = await self.answer(head, body)
                if raw is None:  # hang up without an answer
                    break
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


Serve = Callable[[Answer], Awaitable[tuple[Server, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[Server, str]:
        server = Server(answer)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(listening)
        return server, f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"

    yield start
    for listening in servers:
        listening.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)


def answered(status: bytes, body: bytes = b"{}", extra: bytes = b"") -> Answer:
    async def answer(head: bytes, _: bytes) -> bytes:
        return b"HTTP/1.1 %b\r\n%bcontent-length: %d\r\n\r\n%b" % (status, extra, len(body), body)

    return answer


async def created(head: bytes, body: bytes) -> bytes:
    return ok(b'{"id": 77, "status": "sent"}')


async def test_request_answer_and_reused_connection(serve: Serve) -> None:
    """The body and headers Chatwoot expects; sequential calls share one connection; the
    path follows the base URL's own."""
    server, url = await serve(created)
    async with ChatwootClient(url + "/chat/", Secret("bot-token"), timeout=2) as client:
        assert client._pool is not None  # the keep-alive path, not httpx
        for n in range(3):
            message = await client.create_message(
                3, 1042, content=f"hi {n}", content_attributes={"ext_ref": f"r{n}"}
            )
            assert message.id == 77
    assert server.connections == 1 and len(server.requests) == 3
    head, body = server.requests[0]
    assert head.startswith(b"POST /chat/api/v1/accounts/3/conversations/1042/messages HTTP/1.1")
    assert b"api_access_token: bot-token\r\n" in head
    assert b"host: 127.0.0.1:" in head and b"content-type: application/json" in head
    assert body == (
        b'{"content":"hi 0","message_type":"outgoing","private":false,'
        b'"content_type":"text","content_attributes":{"ext_ref":"r0"}}'
    )


async def test_a_chunked_answer_and_connection_close(serve: Serve) -> None:
    """A chunked body is read whole; `connection: close` is honoured (a new connection next)."""

    async def chunked(head: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            b'5\r\n{"id"\r\n4\r\n: 78\r\n1\r\n}\r\n0\r\n\r\n'
        )

    server, url = await serve(chunked)
    async with ChatwootClient(url, Secret("t"), timeout=2) as client:
        assert (await client.create_message(1, 1, content="a")).id == 78
        assert (await client.create_message(1, 1, content="b")).id == 78
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_reused(serve: Serve) -> None:
    """The server closing an idle keep-alive connection (its timeout) costs a new
    connection, not an ambiguous attempt."""
    server, url = await serve(created)
    async with ChatwootClient(url, Secret("t"), timeout=2) as client:
        await client.create_message(1, 1, content="a")
        for writer in server.writers:
            writer.close()
        await asyncio.sleep(0.1)  # the close reaches the client
        assert (await client.create_message(1, 1, content="b")).id == 77
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "retryable", "ambiguous", "retry_after"),
    [
        pytest.param(answered(b"401 Unauthorized"), False, False, None, id="401"),
        pytest.param(answered(b"404 Not Found"), False, False, None, id="404"),
        pytest.param(
            answered(b"422 Unprocessable", b'{"error":"Invalid"}'), False, False, None, id="422"
        ),  # fmt: skip
        pytest.param(
            answered(b"422 Unprocessable", b'{"error":"Too many messages"}'),
            True,
            False,
            None,
            id="flood",
        ),  # fmt: skip
        pytest.param(
            answered(b"429 Too Many", b"later", b"Retry-After: 7\r\n"), True, False, 7.0, id="429"
        ),  # fmt: skip
        pytest.param(answered(b"500 Error"), True, False, None, id="500"),
        pytest.param(answered(b"502 Bad Gateway"), True, True, None, id="502"),
        pytest.param(answered(b"504 Timeout"), True, True, None, id="504"),
        pytest.param(answered(b"408 Timeout"), True, True, None, id="408"),
        pytest.param(answered(b"200 OK", b"<html>"), True, True, None, id="not-json"),
    ],
)
async def test_answers_are_classified(
    serve: Serve, answer: Answer, retryable: bool, ambiguous: bool, retry_after: float | None
) -> None:
    """Each of Chatwoot's answers becomes what it becomes through httpx."""
    _, url = await serve(answer)
    async with ChatwootClient(url, Secret("secret-token"), timeout=2) as client:
        with pytest.raises(ChatwootError) as caught:
            await client.create_message(3, 1, content="x")
    error = caught.value
    assert (error.retryable, error.ambiguous, error.retry_after) == (
        retryable,
        ambiguous,
        retry_after,
    )
    assert "secret-token" not in str(error)


async def test_refused_is_safe_to_resend() -> None:
    """Nothing listens: the request never left (ConnectError), not ambiguous."""
    async with ChatwootClient(f"http://127.0.0.1:{free_port()}", Secret("t"), timeout=2) as c:
        with pytest.raises(ChatwootError) as caught:
            await c.create_message(3, 1, content="x")
    assert caught.value.retryable and not caught.value.ambiguous
    assert str(caught.value) == "POST /api/v1/accounts/3/conversations/1/messages: ConnectError"


async def test_a_hang_up_after_the_request_is_ambiguous(serve: Serve) -> None:
    """Read, then closed without an answer: Chatwoot may have saved it."""

    async def hang_up(head: bytes, body: bytes) -> None:
        return None

    server, url = await serve(hang_up)
    async with ChatwootClient(url, Secret("t"), timeout=2) as client:
        with pytest.raises(ChatwootError) as caught:
            await client.create_message(3, 1, content="x")
    assert caught.value.retryable and caught.value.ambiguous
    assert len(server.requests) == 1


async def test_no_answer_in_time_is_ambiguous(serve: Serve) -> None:
    """The answer does not come within the timeout: ReadTimeout, ambiguous; the connection
    is not reused (its late answer would be taken for the next request's)."""
    release = asyncio.Event()

    async def late(head: bytes, body: bytes) -> bytes:
        await release.wait()
        return ok(b'{"id": 1}')

    server, url = await serve(late)
    async with ChatwootClient(url, Secret("t"), timeout=0.3) as client:
        with pytest.raises(ChatwootError) as caught:
            await client.create_message(3, 1, content="x")
        assert caught.value.ambiguous and "ReadTimeout" in str(caught.value)
        release.set()
        assert client._pool is not None and client._pool._idle == []


async def test_cancelled_mid_request_leaves_no_connection_behind(serve: Serve) -> None:
    """The deliverer's attempt budget cancels a POST: its connection is closed, not reused
    with the cancelled request's answer still to come."""
    release = asyncio.Event()

    async def late(head: bytes, body: bytes) -> bytes:
        await release.wait()
        return ok(b'{"id": 1}')

    server, url = await serve(late)
    async with ChatwootClient(url, Secret("t"), timeout=5) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.create_message(3, 1, content="x")
        release.set()
        assert client._pool is not None and client._pool._idle == []
        assert client._pool._slots._value == 100  # its slot given back


async def test_a_proxy_in_the_environment_keeps_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only httpx honours HTTP(S)_PROXY: with one set, every call goes through httpx."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ChatwootClient("https://chat.example.com", Secret("t")) as client:
        assert client._pool is None
    async with ChatwootClient("http://127.0.0.1:1", Secret("t")) as client:
        assert client._pool is not None  # a proxy for https only
