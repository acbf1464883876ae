"""Chatwoot webhook signatures (pure): HMAC-SHA256 over "<timestamp>.<raw body>".

Headers arrive as whatever the client sent (any length, any characters): every check here works
on bytes and ASCII-only patterns, so a strange header is a refusal, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

import msgspec

PREFIX = "sha256="
# ASCII digits only: `int()` also takes " 123", "+123" and Arabic-Indic digits.
_TIMESTAMP = re.compile(rb"[0-9]{1,15}")
_SIGNATURE = re.compile(rb"sha256=([0-9a-fA-F]{64})")


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a signature check: accepted or not, signed or not, and why."""

    ok: bool
    signed: bool
    reason: str = ""


class Key(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook secret; bound to one Chatwoot account, or (account None) valid for any."""

    secret: bytes
    account: int | None = None

    def covers(self, accounts: frozenset[int]) -> bool:
        """A bound secret signs only bodies whose every account id is its own: one account's
        admin cannot sign an event that names another account anywhere."""
        return self.account is None or accounts == {self.account}


def sign_chatwoot(body: bytes, secret: str, timestamp: int | str) -> str:
    """The X-Chatwoot-Signature value Chatwoot sends for this body and timestamp."""
    return PREFIX + _digest(body, secret.encode(), str(timestamp).encode()).hex()


def _digest(body: bytes, secret: bytes, timestamp: bytes) -> bytes:
    return hmac.new(secret, timestamp + b"." + body, hashlib.sha256).digest()


def _header_bytes(value: str) -> bytes:
    # Starlette decodes headers as latin-1; anything else a caller passes must not raise either.
    return value.encode("utf-8", "surrogatepass")


def verify_chatwoot(
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[Key],
    now: float,
    accounts: frozenset[int] = frozenset(),
    tolerance_s: int = 300,
) -> Check:
    """Verify over the raw bytes (Chatwoot escapes <, >, & so re-serialised JSON never matches).

    With no secret configured every request is accepted as unsigned (the app allows that only
    with ALLOW_UNSIGNED_WEBHOOKS). With secrets, any one covering the body's `accounts`
    verifies (rotation), and a timestamp further than `tolerance_s` from `now` is a replay.
    """
    if not secrets:
        return Check(ok=True, signed=False, reason="no secret configured")
    if not timestamp or not signature:
        return Check(ok=False, signed=False, reason="missing signature headers")
    stamp = _header_bytes(timestamp)
    if _TIMESTAMP.fullmatch(stamp) is None:
        return Check(ok=False, signed=True, reason="timestamp is not a unix time")
    if abs(now - int(stamp)) > tolerance_s:
        return Check(ok=False, signed=True, reason="timestamp outside tolerance")
    match = _SIGNATURE.fullmatch(_header_bytes(signature))
    if match is None:
        return Check(ok=False, signed=True, reason="signature is not sha256=<hex>")
    given = bytes.fromhex(match.group(1).decode("ascii"))
    for key in secrets:
        if key.covers(accounts) and hmac.compare_digest(_digest(body, key.secret, stamp), given):
            return Check(ok=True, signed=True)
    return Check(ok=False, signed=True, reason="signature does not match")


# -- Meta ----------------------------------------------------------------------------------------


def sign_meta(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value Meta sends for this body: HMAC-SHA256 of the raw bytes."""
    return PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_meta(body: bytes, *, signature: str | None, secret: bytes) -> Check:
    """Verify over the raw bytes exactly as sent (Meta escapes non-ASCII and `/`: re-serialised
    JSON never matches). Meta signs no timestamp, so there is no replay window here: a
    replayed webhook is a duplicate, caught by the delivery id derived from its body."""
    if not signature:
        return Check(ok=False, signed=False, reason="missing X-Hub-Signature-256")
    match = _SIGNATURE.fullmatch(_header_bytes(signature))
    if match is None:
        return Check(ok=False, signed=True, reason="signature is not sha256=<hex>")
    given = bytes.fromhex(match.group(1).decode("ascii"))
    if not hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), given):
        return Check(ok=False, signed=True, reason="signature does not match")
    return Check(ok=True, signed=True)
