"""A small HTTP/1.1 keep-alive client for the one call a backlog of replies makes by the
thousand (Chatwoot's create-message POST): asyncio protocols and httptools' C parser.

httpx spends about 2 ms of CPU per POST here (its client layers, and httpcore's pool probing
every idle connection's socket with select() on each request): more than the rest of a reply's
work. This pool learns that a connection closed from the connection's own callbacks instead,
and formats a request from a header block built once.

Whether a failed request may have reached the server is what the deliverer's exactly-once
rests on, so every failure says it: `sent` is False only when no byte of the request left
(connecting failed or timed out, no connection free in time), True from the first write on.
An answer must say where it ends (content-length or chunked, as Rails and every proxy in front
of it do): one delimited by the connection's close is taken as no answer (ambiguous: the
deliverer looks for proof before sending again, never posts twice).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import cast

import httptools
import msgspec


class HttpFailure(Exception):
    """No (complete) answer. `sent`: the request may have reached the server."""

    def __init__(self, kind: str, *, sent: bool) -> None:
        super().__init__(kind)
        self.kind = kind  # named like httpx's exceptions: ConnectError, ReadTimeout...
        self.sent = sent


class Answer(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]  # names lowercased; a repeated header keeps its last value
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._name = ""

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"RemoteProtocolError: {exc}")

    def eof_received(self) -> bool | None:
        self._fail("RemoteProtocolError: server disconnected without an answer")
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"ReadError: {exc}" if exc else "RemoteProtocolError: connection closed")

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._name = name.decode("latin-1").lower()
        self._headers[self._name] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if not self._parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result(Answer(status, self._headers, b"".join(self._body)))

    # -- use ----------------------------------------------------------------------------------

    def exchange(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, why: str) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            kind = why.partition(":")[0]
            waiter.set_exception(HttpFailure(kind, sent=True))
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to one origin, at most `size` at once (the callers' concurrency).

    Timeouts as httpx's: `connect` to open a connection, `timeout` to wait for a free one and,
    once the request is written, for its whole answer. Idle connections older than
    `keepalive_s` are closed rather than reused (the server may be closing them meanwhile)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        size: int,
        timeout: float,
        connect: float,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.timeout, self.connect_timeout = timeout, connect
        self.ssl_context = ssl_context
        self.keepalive_s = keepalive_s
        self.clock = clock
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []  # most recently used last: reused first

    async def request(self, head: bytes, body: bytes) -> Answer:
        """Send one request (`head`: request line and headers, without the blank line and
        content-length) and read its answer."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise HttpFailure("PoolTimeout", sent=False) from None
        try:
            connection = self._reusable() or await self._open()
            request = b"%b\r\ncontent-length: %d\r\n\r\n%b" % (head, len(body), body)
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await connection.exchange(request)
            except TimeoutError:
                connection.close()
                raise HttpFailure("ReadTimeout", sent=True) from None
            except BaseException:
                connection.close()  # cancelled or failed mid-exchange: never reused
                raise
            if not connection.closed:
                connection.idle_since = self.clock()
                self._idle.append(connection)
            return answer
        finally:
            self._slots.release()

    def _reusable(self) -> _Connection | None:
        now = self.clock()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_s:
                return connection
            connection.close()
        return None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context else None,
                )  # fmt: skip
        except TimeoutError:
            raise HttpFailure("ConnectTimeout", sent=False) from None
        except OSError as exc:
            raise HttpFailure("ConnectError", sent=False) from exc
        return connection

    async def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
