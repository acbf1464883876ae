"""A worker app's inline answer (pure): `{"replies": [...]}` as `sb:outbound` entries.

Each reply has the fields of `sb:outbound`; account, conversation and turn default to the
pushed turn's, and its ref is its own `ref` or `<turn>:<index>`, so the replies of a push that
is retried (the app answered, we never heard) carry the same refs and the deliver group posts
each once. A reply that does not validate is returned apart, with the reason, and the others
still go out. A reply may not speak for another account or conversation than its turn's.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ingress import events


class Bad(msgspec.Struct, frozen=True, kw_only=True):
    index: int | None  # None: the answer as a whole
    reason: str
    raw: bytes


class Replies(msgspec.Struct, frozen=True, kw_only=True):
    good: list[events.OutboundEntry]
    bad: list[Bad]


class _Answer(msgspec.Struct, kw_only=True):
    replies: list[msgspec.Raw] = []


NONE = Replies(good=[], bad=[])


def replies_of(answer: bytes, *, turn: str, account: int, conversation: int) -> Replies:
    """The replies an app's 2xx answer carries. An empty answer, or one that is not a JSON
    object, carries none: the app may answer later through POST /outbound."""
    if not answer.strip() or not answer.lstrip().startswith(b"{"):
        return NONE
    try:
        parsed = msgspec.json.decode(answer, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Replies(good=[], bad=[Bad(index=None, reason=f"answer: {exc}", raw=answer)])
    good: list[events.OutboundEntry] = []
    bad: list[Bad] = []
    for index, raw in enumerate(parsed.replies):
        try:
            good.append(_reply(raw, index, turn=turn, account=account, conversation=conversation))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            bad.append(Bad(index=index, reason=f"reply {index}: {exc}", raw=bytes(raw)))
    return Replies(good=good, bad=bad)


def _reply(
    raw: msgspec.Raw, index: int, *, turn: str, account: int, conversation: int
) -> events.OutboundEntry:
    fields: Any = msgspec.json.decode(raw)
    if not isinstance(fields, dict):
        raise ValueError("a reply must be a JSON object")
    if fields.setdefault("account", account) != account:
        raise ValueError(f"a reply to a turn of account {account} cannot name another account")
    if fields.setdefault("conversation", conversation) != conversation:
        raise ValueError(f"a reply to a turn of conversation {conversation} cannot name another")
    fields.setdefault("turn", turn)
    if fields.get("ref") is None:
        fields["ref"] = f"{turn}:{index}"
    return msgspec.convert(fields, type=events.OutboundEntry)
