"""The spool file's format (pure): framed records, and the scan that tells whole records,
damage and a torn tail apart.

A record is a magic, the payload's length, a CRC32 of length and payload, then the payload
(the stream key and the entry's fields, msgpack). The magic lets a reader find the next good
record after a damaged one. The previous version wrote a bare length and the payload:
`old_records` reads such a file, for the spool to convert it.
"""

from __future__ import annotations

import struct
import zlib

import msgspec

MAGIC = b"\xa5SB1"
HEADER = struct.Struct(">4sII")  # magic, payload length, crc32(length + payload)
LENGTH = struct.Struct(">I")


class Record(msgspec.Struct, frozen=True):
    key: str
    fields: dict[str, bytes]
    delivery: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def frame(record: Record) -> bytes:
    payload = _encoder.encode(record)
    length = LENGTH.pack(len(payload))
    return MAGIC + length + LENGTH.pack(zlib.crc32(length + payload)) + payload


def record_at(raw: bytes, offset: int) -> tuple[Record, int] | None:
    """The record framed at `offset` and where it ends, or None if none is intact there."""
    if len(raw) - offset < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack_from(raw, offset)
    end = offset + HEADER.size + length
    if magic != MAGIC or end > len(raw):
        return None
    payload = raw[offset + HEADER.size : end]
    if zlib.crc32(LENGTH.pack(length) + payload) != crc:
        return None
    try:
        return _decoder.decode(payload), end
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # a CRC collision on garbage: as damaged as any other


class Scan(msgspec.Struct, frozen=True):
    """What a spool file holds: its intact records' byte spans, the damaged spans between them,
    and where a torn tail starts (None when the file ends on a whole record)."""

    good: list[tuple[int, int]]
    damaged: list[tuple[int, int]]
    torn_at: int | None


def scan(raw: bytes, *, max_record: int | None = None) -> Scan:
    """`max_record`: the largest record an append could write (None: no bound); a tail
    stating a longer one is damage, not a torn append."""
    good: list[tuple[int, int]] = []
    damaged: list[tuple[int, int]] = []
    offset = 0
    while offset < len(raw):
        found = record_at(raw, offset)
        if found is not None:
            good.append((offset, found[1]))
            offset = found[1]
            continue
        resume = _next_record(raw, offset + 1)
        if resume is None:
            if _is_torn(raw, offset, max_record):
                return Scan(good=good, damaged=damaged, torn_at=offset)
            damaged.append((offset, len(raw)))
            break
        damaged.append((offset, resume))
        offset = resume
    return Scan(good=good, damaged=damaged, torn_at=None)


def old_records(raw: bytes) -> list[Record] | None:
    """The records of a spool the previous version wrote (each a 4-byte length, then the
    msgpack Record: no magic, no CRC), or None unless the whole file is such a chain (its
    torn last record aside, which that version never answered 200 either)."""
    if not raw or raw.startswith(MAGIC):
        return None
    records, offset = [], 0
    while offset + LENGTH.size <= len(raw):
        (length,) = LENGTH.unpack_from(raw, offset)
        end = offset + LENGTH.size + length
        if end > len(raw):
            break
        try:
            records.append(_decoder.decode(raw[offset + LENGTH.size : end]))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None  # not that format: damage, for the scan to quarantine
        offset = end
    return records or None


def _next_record(raw: bytes, start: int) -> int | None:
    position = raw.find(MAGIC, start)
    while position != -1:
        if record_at(raw, position) is not None:
            return position
        position = raw.find(MAGIC, position + 1)
    return None


def _is_torn(raw: bytes, offset: int, max_record: int | None) -> bool:
    """The last append stopped part way: a header's beginning, or a header whose payload runs
    past the end. Anything else at the end (a whole record with a bad CRC, a length no append
    could have written: a flipped bit) is damage."""
    rest = raw[offset:]
    if len(rest) < HEADER.size:
        return MAGIC.startswith(rest[: len(MAGIC)])
    magic, length, _ = HEADER.unpack_from(rest)
    if max_record is not None and HEADER.size + length > max_record:
        return False
    return bool(magic == MAGIC and HEADER.size + length > len(rest))
