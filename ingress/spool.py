"""The local spool: where webhooks go while Redis is unreachable, fsync'd before the answer.

An append-only file of framed records (`framing`), owned by one process at a time (a flock on
`<spool>.lock`). On open and before each drain the file is checked: a spool of the previous
version is converted, a torn tail (a crash mid-append, never answered 200) is cut off, and
damaged bytes are moved to `<spool>.quarantine` so the records after them still drain.

The drainer replays the records present when it starts, without holding the append lock, and
drops the published prefix under the lock as it goes (keeping what was appended meanwhile). A
crash mid-drain replays some records twice, which the delivery-id dedup and persist's
message-id uniqueness absorb; no record is dropped before it was published.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ingress.errors import SwitchboardError
from ingress.framing import HEADER, MAGIC, Record, Scan, frame, old_records, record_at, scan

__all__ = ["MAGIC", "Record", "Scan", "Spool", "SpoolFull", "SpoolInUse", "frame", "scan"]

log = structlog.get_logger("spool")

_READ_CHUNK = 256 * 1024  # bytes of records read per step of a drain

Write = Callable[[int, memoryview], int]
T = TypeVar("T")


class SpoolFull(Exception):
    pass


class SpoolInUse(SwitchboardError):
    """Another process holds the spool: two drainers of one file would each cut the same
    prefix, and the second cut would drop records appended (and answered) in between."""


class Spool:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_record: int | None = None,
        write: Write = os.write,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        # The largest record an append could have written (the largest body, its fields and
        # the framing): a stated length beyond it is damage, not a torn tail.
        self.max_record = min(max_record or max_bytes, max_bytes)
        # A long drain cuts its published prefix every so many bytes (a cut rewrites the
        # rest of the file: not after every record).
        self.cut_every = max(_READ_CHUNK, max_bytes // 8)
        self._working: asyncio.Future[Any] | None = None  # the last file operation started
        self._held: int | None = None  # the lock file's descriptor while this process owns it
        self.quarantine = path.with_name(path.name + ".quarantine")
        self.lock = asyncio.Lock()  # appends, checks and the drained prefix's cut
        # One drain at a time: two would both cut `done` bytes, the second from records
        # appended after the first cut.
        self._draining = asyncio.Lock()
        self._write_fn = write  # the OS seam: tests inject short writes
        # Bytes known to be whole records (appended by us, or checked): -1 until checked.
        self._checked = -1

    def hold(self) -> None:
        """Own the spool for this process's lifetime (an exclusive `flock` on `<spool>.lock`,
        let go by `release` or the process's end), or SpoolInUse."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolInUse(
                f"spool {self.path} is held by another ingress (same SWITCHBOARD_HOME and "
                "port): stop it, or give this one its own port or SWITCHBOARD_HOME"
            ) from None
        self._held = fd

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)  # closing the descriptor lets the flock go
            self._held = None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0  # absent, or unreachable (then appends fail too, and /ready says so)

    def writable(self) -> bool:
        """Whether an append could succeed now (directory reachable, file openable)."""
        try:
            if self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                probe = self.path.with_name(self.path.name + ".probe")
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
                probe.unlink()
        except OSError:
            return False
        return True

    def cutting(self) -> bool:
        """Whether a drain is under way and the lock is taken (by a cut of the published
        prefix, which rewrites the rest of the file): an append now waits for that rewrite."""
        return self._draining.locked() and self.lock.locked()

    async def append(self, record: Record) -> None:
        """Write and fsync one record; raises SpoolFull or OSError (nothing kept) otherwise."""
        blob = frame(record)
        await self._exclusive(self._append_within_cap, blob)

    def _append_within_cap(self, blob: bytes) -> None:
        if self.size() + len(blob) > self.max_bytes:
            raise SpoolFull(f"spool over {self.max_bytes} bytes")
        self._append(blob)

    def _append(self, blob: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(blob)
                while view:  # os.write may write less than asked
                    written = self._write_fn(fd, view)
                    if written <= 0:
                        raise OSError(errno.ENOSPC, "the spool accepted no more bytes")
                    view = view[written:]
                os.fsync(fd)  # on disk before the webhook is answered
            except OSError:
                # Leave no partial record behind; if even this fails, the next check moves it.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
            if start == 0:
                _fsync_dir(self.path.parent)  # the file's own name must survive a crash too
            if self._checked == start:
                self._checked = start + len(blob)
        finally:
            os.close(fd)

    async def check(self) -> int:
        """Cut a torn tail and quarantine damage; returns the bytes of whole records."""
        return await self._exclusive(self._check)

    def _check(self) -> int:
        size = self.size()
        if size == self._checked:
            return size
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        raw = self._upgraded(raw)
        found = scan(raw, max_record=self.max_record)
        if found.damaged or found.torn_at is not None:
            self._repair(raw, found)
        self._checked = sum(end - start for start, end in found.good)
        return self._checked

    def _upgraded(self, raw: bytes) -> bytes:
        """A spool left by the previous version, in this one's framing (written whole, then
        renamed over it: a crash leaves one or the other), so that an upgrade drains it."""
        records = old_records(raw)
        if records is None:
            return raw
        content = b"".join(frame(record) for record in records)
        self._replace(content)
        log.warning("spool.upgraded", records=len(records), path=str(self.path))
        return content

    def _repair(self, raw: bytes, found: Scan) -> None:
        if found.damaged:
            with self.quarantine.open("ab") as out:
                for start, end in found.damaged:
                    out.write(raw[start:end])
                out.flush()
                os.fsync(out.fileno())
            for start, end in found.damaged:
                # Where and how much, never the bytes: they are webhook bodies.
                log.error("spool.quarantined", offset=start, bytes=end - start,
                          quarantine=str(self.quarantine))  # fmt: skip
        if found.torn_at is not None:
            log.warning("spool.torn_tail_cut", offset=found.torn_at,
                        bytes=len(raw) - found.torn_at)  # fmt: skip
        self._replace(b"".join(raw[start:end] for start, end in found.good))

    def _replace(self, content: bytes) -> None:
        """Swap the spool's content atomically: a crash leaves the old file or the new one."""
        if not content:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        _fsync_dir(self.path.parent)

    def _read(self, offset: int, limit: int) -> list[tuple[Record, int]]:
        """Whole records from `offset` (up to about a chunk of them), before `limit`."""
        with self.path.open("rb") as source:
            source.seek(offset)
            raw = source.read(max(0, min(limit - offset, _READ_CHUNK)))
            position, records = 0, []
            while True:
                found = record_at(raw, position)
                if found is None:
                    break
                records.append((found[0], offset + found[1]))
                position = found[1]
            if not records and offset < limit:
                # A record bigger than a chunk: read just it.
                source.seek(offset)
                header = source.read(HEADER.size)
                if len(header) == HEADER.size:
                    raw = header + source.read(HEADER.unpack(header)[1])
                    found = record_at(raw, 0)
                    if found is not None:
                        records.append((found[0], offset + found[1]))
        if not records and offset < limit:
            self._checked = -1  # changed under us: check it all again next time
            raise OSError(errno.EIO, f"spool record at byte {offset} is not readable")
        return records

    async def drain(self, publish: Callable[[Record], Awaitable[None]]) -> int:
        """Replay the records present now through `publish`, in order, then drop them.

        The file is read and published without the lock, so webhooks appended meanwhile wait
        only for a cut; they land after `limit` and so stay behind the older records. A long
        drain cuts what it published every `cut_every` bytes: a full spool frees room while
        it drains, not only at the end.
        """
        async with self._draining:
            limit = await self.check()
            done, count = 0, 0  # done: where the next record starts in the file as it is now
            try:
                while done < limit:
                    batch = await asyncio.to_thread(self._read, done, limit)
                    for record, end in batch:
                        await publish(record)
                        done, count = end, count + 1
                    if done >= self.cut_every:
                        await self._cut(done)
                        done, limit = 0, limit - done
            finally:
                if done:
                    await self._cut(done)
            return count

    async def _cut(self, upto: int) -> None:
        await self._exclusive(self._drop, upto)

    async def _exclusive(self, work: Callable[..., T], *args: object) -> T:
        """Run `work` (a file operation) in a thread, under the lock, shielded from
        cancellation. Cancelled mid-way (a shutdown cancels the drainer), a plain `async with
        lock: await to_thread(...)` lets the lock go while the thread still rewrites the
        file, and the last drain's check could rewrite it at the same moment (both through
        `.tmp`). Here the operation runs to its end holding the lock; `settled` waits for it."""

        async def locked() -> T:
            async with self.lock:
                return await asyncio.to_thread(work, *args)

        task = asyncio.ensure_future(locked())
        self._working = task
        return await asyncio.shield(task)

    async def settled(self) -> None:
        """Wait for a file operation still under way (one whose caller was cancelled)."""
        if self._working is not None:
            with contextlib.suppress(Exception):  # its caller got (or dropped) the outcome
                await self._working

    def _drop(self, upto: int) -> None:
        with self.path.open("rb") as source:
            source.seek(upto)
            rest = source.read()
        self._replace(rest)
        self._checked = self._checked - upto if self._checked >= upto else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
