"""Automation-rule and macro webhooks (pure): who may post them, and their business key.

Chatwoot posts `automation_event.*` and `macro.executed` unsigned and with no
`X-Chatwoot-Delivery` (chatwoot.md §1, §4b): the URL's own token stands in for the signature,
and a key derived from the payload stands in for the delivery id in the dedup window.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import msgspec

from ingress import signatures
from ingress.settings import WebhookSecret

# A business key is built from payload values: keep it to what Chatwoot's own values look
# like (ids, epoch floats), so no body can make a long or odd Redis key out of it.
_PLAIN = re.compile(rb"-?[0-9][0-9.eE+-]{0,39}")
_EVENT = re.compile(r"[A-Za-z0-9_.]{1,80}")


class _Keyed(msgspec.Struct, kw_only=True):
    """The fields a business key is made of, taken as their raw JSON tokens."""

    event: msgspec.Raw = msgspec.Raw(b"")
    id: msgspec.Raw = msgspec.Raw(b"")
    updated_at: msgspec.Raw = msgspec.Raw(b"")
    created_at: msgspec.Raw = msgspec.Raw(b"")


_keyed_decoder = msgspec.json.Decoder(_Keyed)

SOURCE = "automation"  # the `source` of their sb:events entries (and audit rows)


def is_automation(event: str) -> bool:
    """What Chatwoot really posts to an automation URL: anything else on this path (a
    `message_created` forging a customer, a snapshot silencing a conversation) is refused."""
    return event.startswith("automation_event.") or event == "macro.executed"


def token_ok(
    expected: Sequence[WebhookSecret], given: str | None, accounts: frozenset[int] = frozenset()
) -> bool:
    """The `?token=` matches one of AUTOMATION_TOKEN's tokens (constant time) that covers the
    body's `accounts`: a token bound to account N (`N:token`) verifies only bodies whose every
    account id is N, as a bound webhook secret does. No token never matches."""
    if given is None:
        return False
    # Every token compared, so the time taken does not tell which one matched.
    matched = [token.matches(given) for token in expected]
    return any(
        ok and signatures.Key(secret=b"", account=token.account).covers(accounts)
        for ok, token in zip(matched, expected, strict=True)
    )


def business_key(body: bytes, *, event: str, account: int | None) -> str:
    """`automation:<account>:<event>:<conversation id>:<updated_at>` for the payload's object
    (conversation snapshots: its id and `updated_at`, else `created_at`). The same rule fired
    twice on the same state is one event; any change moves `updated_at`, so a new key.
    A value that is not a plain number is replaced by a digest, never copied into the key."""
    try:
        keyed = _keyed_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        keyed = _Keyed()
    version = keyed.updated_at if bytes(keyed.updated_at) else keyed.created_at
    name = event if _EVENT.fullmatch(event) else _digest(event.encode())
    if not bytes(keyed.id) or not bytes(version):
        # Nothing dates the object: identical bodies are still one event.
        return f"automation:{account or ''}:{name}:body:{_digest(body)}"
    return f"automation:{account or ''}:{name}:{_part(keyed.id)}:{_part(version)}"


def _part(raw: msgspec.Raw) -> str:
    token = bytes(raw)
    return token.decode() if _PLAIN.fullmatch(token) else _digest(token)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]
