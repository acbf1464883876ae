"""The local spool: where webhooks go while Redis is unreachable, fsync'd before the answer.

An append-only file of length-prefixed records (the stream key and the entry's fields). The
drainer replays it into Redis in order, then truncates it; a crash mid-drain replays some
records twice, which the delivery-id dedup and persist's message-id uniqueness absorb.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

_HEADER = struct.Struct(">I")


class SpoolFull(Exception):
    pass


class Record(msgspec.Struct, frozen=True):
    key: str
    fields: dict[str, bytes]
    delivery: str = ""


class Spool:
    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock = asyncio.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Record)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    async def append(self, record: Record) -> None:
        data = self._encoder.encode(record)
        async with self.lock:
            if self.size() + len(data) + _HEADER.size > self.max_bytes:
                raise SpoolFull(f"spool over {self.max_bytes} bytes")
            await asyncio.to_thread(self._write, _HEADER.pack(len(data)) + data)

    def _write(self, blob: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, blob)
            os.fsync(fd)  # on disk before the webhook is answered
        finally:
            os.close(fd)

    def _read(self) -> list[Record]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records, offset = [], 0
        while offset + _HEADER.size <= len(raw):
            (length,) = _HEADER.unpack_from(raw, offset)
            end = offset + _HEADER.size + length
            if end > len(raw):
                break  # a torn last write (crash mid-append): it was never answered 200
            records.append(self._decoder.decode(raw[offset + _HEADER.size : end]))
            offset = end
        return records

    async def drain(self, publish: Callable[[Record], Awaitable[None]]) -> int:
        """Replay every record through `publish`, in order, then empty the spool. Appends wait
        meanwhile, so nothing written during the drain jumps ahead of older records."""
        async with self.lock:
            records = await asyncio.to_thread(self._read)
            for record in records:
                await publish(record)
            if records:
                await asyncio.to_thread(self.path.unlink, missing_ok=True)
        return len(records)
