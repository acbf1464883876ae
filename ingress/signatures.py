"""Chatwoot webhook signatures (pure): HMAC-SHA256 over "<timestamp>.<raw body>"."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgspec

PREFIX = "sha256="


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a signature check: accepted or not, signed or not, and why."""

    ok: bool
    signed: bool
    reason: str = ""


def sign_chatwoot(body: bytes, secret: str, timestamp: int | str) -> str:
    """The X-Chatwoot-Signature value Chatwoot sends for this body and timestamp."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return PREFIX + digest.hexdigest()


def verify_chatwoot(
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance_s: int = 300,
) -> Check:
    """Verify over the raw bytes (Chatwoot escapes <, >, & so re-serialised JSON never matches).

    With no secret configured every request is accepted as unsigned. With secrets, any one of
    them verifies (rotation), and a timestamp further than `tolerance_s` from `now` is a replay.
    """
    if not secrets:
        return Check(ok=True, signed=False, reason="no secret configured")
    if not timestamp or not signature:
        return Check(ok=False, signed=False, reason="missing signature headers")
    try:
        sent_at = int(timestamp)
    except ValueError:
        return Check(ok=False, signed=True, reason="timestamp is not a unix time")
    if abs(now - sent_at) > tolerance_s:
        return Check(ok=False, signed=True, reason="timestamp outside tolerance")
    if not signature.startswith(PREFIX):
        return Check(ok=False, signed=True, reason="signature is not sha256=<hex>")
    for secret in secrets:
        if hmac.compare_digest(sign_chatwoot(body, secret, timestamp), signature):
            return Check(ok=True, signed=True)
    return Check(ok=False, signed=True, reason="signature does not match")
