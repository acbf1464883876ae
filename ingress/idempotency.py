"""`POST /outbound`'s Idempotency-Key: the reply's ref, and the answer a retried POST gets.

The key (or the body's `ref`) is the reply's ref, so the deliver group posts the reply once
whatever the number of POSTs. The first POST's answer is remembered under the key for a day,
so a retry gets the same 202 (same entry id) and adds nothing to the stream; the same key
with another body is refused (422), as the IETF draft asks. Remembering is best effort: with
Redis unreachable (the reply spooled) or two POSTs racing, the ref still makes it one reply.
"""

from __future__ import annotations

import hashlib
import re

import msgspec
import redis.asyncio as aioredis

from ingress.connect import UNAVAILABLE

HEADER = "idempotency-key"
REF_MAX = 200  # as OutboundEntry.ref
# Visible ASCII a ref can carry into a Redis key, a log line and Chatwoot's ext_ref: UUIDs,
# base64, turn-derived refs (`3:7:903:0`).
_KEY = re.compile(r"[A-Za-z0-9._~:+/=-]{1,200}")
TTL_S = 24 * 3600


class BadKey(ValueError):
    """A key we refuse; the message names the header."""


def checked(key: str) -> str:
    if len(key) > REF_MAX:
        raise BadKey(f"Idempotency-Key is longer than {REF_MAX} characters")
    if not _KEY.fullmatch(key):
        raise BadKey("Idempotency-Key may hold only letters, digits and . _ ~ : + / = - (1 to 200)")
    return key


class Remembered(msgspec.Struct, frozen=True):
    entry: str | None
    body_sha256: str


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Memo:
    def __init__(self, redis: aioredis.Redis, stream_key: str) -> None:
        self.redis = redis
        self.prefix = f"{{{stream_key}}}:idempotency:"

    async def recall(self, key: str) -> Remembered | None:
        try:
            raw = await self.redis.get(self.prefix + key)
        except UNAVAILABLE:
            return None  # the ref still makes a second POST one reply
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Remembered)
        except msgspec.DecodeError:
            return None

    async def remember(self, key: str, answer: Remembered) -> None:
        try:
            await self.redis.set(self.prefix + key, msgspec.json.encode(answer), ex=TTL_S, nx=True)
        except UNAVAILABLE:
            pass
