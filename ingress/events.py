"""The wire types of every stream entry, and the one codec between them and Redis field maps.

Entries are flat field maps so that `XRANGE sb:events - + COUNT 5` reads well: scalars are
plain text, booleans 1/0, absent values empty, and nested values (a turn's messages, a reply's
content_attributes) compact JSON.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import msgspec

from ingress.errors import EntryDecodeError

S = TypeVar("S", bound=msgspec.Struct)
Fields = dict[str, bytes]

json_encoder = msgspec.json.Encoder()


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the stream entry types."""


class EventEntry(Entry, frozen=True, kw_only=True):
    """`sb:events`: one webhook as received."""

    source: str = "chatwoot"
    event: str
    delivery: str = ""
    account: int | None = None
    conversation: int | None = None
    received_at: int
    signed: bool
    body: bytes
    # Set by the backfill only: a customer message a public reply (human or bot) already
    # followed when it was listed. Stored like any message, but never turned into a turn.
    answered: bool = False


# Chatwoot's delivery ids are UUIDs (36 characters); the header is neither signed nor bounded,
# and it is a dedup key and an indexed column (a btree row holds at most ~2.7 kB).
DELIVERY_MAX = 200


def bounded_delivery(delivery: str) -> str:
    """A delivery id as stored: itself when short, else a stable digest of it, so a long
    header still deduplicates and never makes its webhook unstorable."""
    if len(delivery) <= DELIVERY_MAX:
        return delivery
    digest = hashlib.sha256(delivery.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    file_type: str | None = None
    data_url: str | None = None
    content_type: str | None = None
    file_size: int | None = None


class TurnMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    content: str | None = None
    attachments: list[Attachment] = []
    created_at: str


class HistoryMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message of the conversation, either side, as a turn's `history` shows it."""

    id: int
    direction: str  # inbound | outbound
    sender_kind: str  # contact | user (a human agent) | agent_bot | system (templates)
    sender_id: int | None = None
    content: str | None = None
    content_type: str | None = None
    attachments: list[Attachment] = []
    private: bool = False  # an agent's note: only on routes with `history_private`
    created_at: str


class TurnContact(msgspec.Struct, frozen=True, kw_only=True):
    """The conversation's contact, as Chatwoot last sent it."""

    id: int
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    identifier: str | None = None
    custom_attributes: dict[str, Any] = {}
    additional_attributes: dict[str, Any] = {}


class TurnEntry(Entry, frozen=True, kw_only=True):
    """`sb:turns`: the customer's messages an agent should answer, as one turn, and what the
    agent needs to answer them without calling Chatwoot (docs/turns.md).

    Fields after `route` came later (issue #12): each has a default, so an agent built
    against the older entry still decodes a new one, and a new agent an old one."""

    turn: str
    account: int
    inbox: int | None = None
    conversation: int
    channel: str | None = None
    contact: int | None = None
    through: int
    messages: list[TurnMessage]
    route: str
    # The conversation's last messages up to `through`, both sides, oldest first: `messages`
    # are among them when they fit (`turns.history` in streams.yaml).
    history: list[HistoryMessage] = []
    contact_details: TurnContact | None = None
    inbox_name: str | None = None
    # The conversation's labels and attributes.
    labels: list[str] = []
    custom_attributes: dict[str, Any] = {}
    additional_attributes: dict[str, Any] = {}


class OutboundKind(enum.StrEnum):
    MESSAGE = "message"
    HANDOFF = "handoff"
    RESOLVE = "resolve"
    TYPING_ON = "typing_on"
    TYPING_OFF = "typing_off"
    # The agent is still working on the turn: pushes its answer deadline, sends nothing.
    HOLD = "hold"


class OutboundEntry(Entry, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`sb:outbound`: a reply (or action) an agent wants in a Chatwoot conversation.

    Also the body of `POST /outbound`, hence unknown fields are rejected: a misspelt
    `privat` must not post a private note publicly.
    """

    account: int
    conversation: int | None = None
    content: str = ""
    ref: str | None = None
    turn: str | None = None
    kind: OutboundKind = OutboundKind.MESSAGE
    private: bool = False
    content_attributes: dict[str, Any] = {}
    # Starting a conversation (no `conversation` yet): the inbox and the contact's source id
    # there (phone number, email...), and the contact id when known.
    inbox: int | None = None
    source_id: str | None = None
    contact: int | None = None

    def __post_init__(self) -> None:
        if self.kind is OutboundKind.MESSAGE and not self.content.strip():
            raise ValueError("`content` must not be empty for a message")
        if self.ref is not None and not 0 < len(self.ref) <= 200:
            raise ValueError("`ref` must be 1 to 200 characters")
        if self.account < 1 or (self.conversation is not None and self.conversation < 1):
            raise ValueError("`account` and `conversation` must be positive ids")
        if self.conversation is None and (self.inbox is None or not self.source_id):
            raise ValueError("give `conversation`, or `inbox` and `source_id` to start one")
        if self.conversation is None and self.kind is not OutboundKind.MESSAGE:
            raise ValueError(f"a `{self.kind}` needs an existing `conversation`")


class DeadEntry(Entry, frozen=True, kw_only=True):
    """`sb:dead`: an entry a group gave up on, why, and the original entry's fields.

    On the wire the original fields sit flat beside the meta fields, so that `XRANGE sb:dead`
    reads like the entry itself. An original field named like a meta field (or starting with
    `_`) is written with a `_` in front, so it can neither clobber the meta nor be lost.
    """

    stream: str = ""  # the stream the entry came from, and goes back to on replay
    group: str = ""
    id: str = ""  # the original entry's id; empty for a reply that failed in a retry
    deliveries: int | None = None
    reason: str = ""
    error: str = ""
    original: dict[str, bytes] = {}


DEAD_META = ("stream", "group", "id", "deliveries", "reason", "error")


def plain(fields: Mapping[bytes, bytes] | Mapping[str, bytes]) -> Fields:
    """A field map with text keys, as read from Redis (bytes) or built by us (text).

    Agents XADD `sb:outbound` themselves, so a field name may be any bytes: one that is not
    UTF-8 is decoded with `surrogateescape` (never an error, never a loss), and `wire` gives
    its bytes back."""
    return {
        (k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else k): v
        for k, v in fields.items()
    }


def wire(fields: Mapping[str, bytes]) -> dict[bytes, bytes]:
    """A field map as XADD takes it, each name byte for byte as it was read (see `plain`):
    redis-py would refuse to encode a name holding escaped bytes."""
    return {k.encode("utf-8", "surrogateescape"): v for k, v in fields.items()}


def shown(name: str) -> str:
    """A field name fit to print: escaped bytes as `\\xff`, never an encoding error."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _escaped(name: str) -> str:
    return f"_{name}" if name in DEAD_META or name.startswith("_") else name


def _encode_dead(entry: DeadEntry) -> Fields:
    out: Fields = {_escaped(k): v for k, v in entry.original.items()}
    for name in DEAD_META:
        out[name] = _encode_value(getattr(entry, name))
    return out


def _decode_dead(fields: Fields) -> DeadEntry:
    # Never fails: whatever lies in the dead stream, ops must be able to see and purge it.
    meta = {name: fields.get(name, b"").decode(errors="replace") for name in DEAD_META}
    deliveries = meta.pop("deliveries")
    return DeadEntry(
        **meta,
        deliveries=int(deliveries) if deliveries.isdecimal() else None,
        original={
            (k[1:] if k.startswith("_") else k): v for k, v in fields.items() if k not in DEAD_META
        },
    )


def encode(entry: Entry) -> Fields:
    """An entry as the field map XADD takes."""
    if isinstance(entry, DeadEntry):
        return _encode_dead(entry)
    out: Fields = {}
    for name in entry.__struct_fields__:
        out[name] = _encode_value(getattr(entry, name))
    return out


def decode(kind: type[S], fields: Mapping[bytes, bytes] | Mapping[str, bytes]) -> S:
    """A field map read from Redis as an entry; EntryDecodeError names what is wrong."""
    text_keyed = plain(fields)
    if kind is DeadEntry:
        return cast(S, _decode_dead(text_keyed))
    values: dict[str, Any] = {}
    for name, hint in _hints(kind).items():
        raw = text_keyed.get(name)
        if raw is None:
            continue  # missing: the Struct's default applies, or its error names the field
        try:
            values[name] = _decode_value(raw, hint)
        except (ValueError, msgspec.DecodeError) as exc:
            raise EntryDecodeError(f"field `{name}`: {exc}") from exc
    try:
        return msgspec.convert(values, type=kind)
    except msgspec.ValidationError as exc:
        raise EntryDecodeError(str(exc)) from exc


def _encode_value(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, str | int):
        return str(value).encode()
    return json_encoder.encode(value)


def _decode_value(raw: bytes, hint: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:
        if raw == b"":
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bytes:
        return raw
    text = raw.decode("utf-8")
    if hint is bool:
        if text not in ("0", "1"):
            raise ValueError(f"expected 1 or 0, got {text[:20]!r}")
        return text == "1"
    if hint is int:
        return int(text)
    if hint is str or (isinstance(hint, type) and issubclass(hint, str)):
        return text
    return msgspec.json.decode(raw)


@functools.cache
def _hints(kind: type[msgspec.Struct]) -> dict[str, Any]:
    return typing.get_type_hints(kind)
