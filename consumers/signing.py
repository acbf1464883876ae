"""Standard Webhooks signatures (pure): how a push to a worker app is signed, and verified.

https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp` (Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
the secret `whsec_<base64>` decoded. Any receiver library of the spec verifies what we send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping

PREFIX = "whsec_"
# The spec asks for 24 to 64 bytes of key; 32 is what its reference libraries generate.
KEY_BYTES = 32
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
TOLERANCE_S = 300  # a receiver refuses timestamps further than this from its clock (replay)


class SecretError(ValueError):
    """A secret that is not `whsec_` followed by base64 of 24 to 64 bytes."""


def key_of(secret: str) -> bytes:
    """The HMAC key a `whsec_<base64>` secret holds (the message never shows the secret)."""
    if not secret.startswith(PREFIX):
        raise SecretError("a secret must start with whsec_ (Standard Webhooks format)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("a secret must be whsec_ followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretError(f"a secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def new_secret(key: bytes) -> str:
    """A secret for `key` (pass `secrets.token_bytes(KEY_BYTES)`: randomness is injected)."""
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretError(f"a secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return PREFIX + base64.b64encode(key).decode()


def masked(secret: str) -> str:
    """What a listing shows of a secret: its scheme only."""
    return PREFIX + "…" if secret.startswith(PREFIX) else "…"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed request (the same id on every retry of one message)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secrets: Iterable[str],
    received: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """Does one of `secrets` sign `body` with these headers, at a timestamp near `now`? The
    header may list several space-separated signatures (key rotation): one match is enough."""
    msg_id = received.get("webhook-id", "")
    stamp = received.get("webhook-timestamp", "")
    offered = received.get("webhook-signature", "").split()
    if not msg_id or not stamp.isascii() or not stamp.isdigit() or not offered:
        return False
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance_s:
        return False
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body)
        # Compare every offered value (constant time each): the position of a match leaks
        # nothing an attacker controls.
        if any(
            hmac.compare_digest(expected.encode(), o.encode("utf-8", "replace")) for o in offered
        ):
            return True
    return False
