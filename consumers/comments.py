"""Instagram comments in a Meta webhook body (pure): which changes are comments, their media,
and the key Meta's duplicates are recognised by.

meta.md: `entry[].changes[]` with `field` `comments` or `live_comments`, `value.media.id` and
`value.id` (the comment). One body may batch several entries and changes; anything else in it
(direct messages under `messaging`, other fields) is not a comment and is left alone.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

FIELDS = frozenset({"comments", "live_comments"})
# Graph ids are decimal strings. Only such an id is put in a Graph URL path or a Redis key:
# a body is user input, and `../me/accounts` must never become a request of its own.
_GRAPH_ID = re.compile(r"[0-9]{1,32}")


class Comment(msgspec.Struct, frozen=True, kw_only=True):
    field: str
    comment_id: str
    media_id: str

    @property
    def key(self) -> str:
        """Meta may deliver the same comment twice (or in another batch): `(field, value.id)`
        names it."""
        return f"{self.field}:{self.comment_id}"


class _Body(msgspec.Struct):
    """Only the shape is fixed (an object); what is inside is checked item by item below,
    so one odd change never hides the comments beside it."""

    entry: Any = None


_decoder = msgspec.json.Decoder(_Body)


class Unreadable(ValueError):
    """The body is not a JSON object at all: nothing in it can be forwarded."""


class Parsed(msgspec.Struct, frozen=True, kw_only=True):
    comments: list[Comment]
    # Comment changes that cannot be routed (no comment or media id, or one that is not a
    # Graph id): said in the audit trail, never guessed at.
    unusable: list[str]
    # Anything else the body holds (other fields, direct messages, odd items): no app gets
    # it, so a body holding any is never forwarded whole.
    others: int = 0


def parse(body: bytes) -> Parsed:
    """The comments of a Meta body, in order, each once (a body naming one twice is one)."""
    try:
        decoded = _decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise Unreadable(f"not a JSON object: {exc}") from None
    comments: dict[str, Comment] = {}
    unusable: list[str] = []
    others = _others(decoded.entry)
    for change in _changes(decoded.entry):
        if change.get("field") not in FIELDS:
            others += 1
            continue
        found = _comment(str(change["field"]), change.get("value"))
        if isinstance(found, str):
            unusable.append(found)
        else:
            comments.setdefault(found.key, found)
    return Parsed(comments=list(comments.values()), unusable=unusable, others=others)


def only(body: bytes, keys: set[str]) -> bytes:
    """The body as one app gets it: the original bytes when all it holds is comments for
    that app (the usual webhook: one comment), else a copy holding only the app's comments
    (same shape: `object`, each entry's `id` and `time`), so that an app never sees another
    Instagram account's comments batched in the same webhook."""
    parsed = parse(body)
    if not parsed.unusable and not parsed.others and {c.key for c in parsed.comments} <= keys:
        return body
    data = msgspec.json.decode(body)
    kept_entries = []
    for entry in data.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            continue
        kept = [
            change
            for change in entry["changes"]
            if isinstance(change, dict)
            and change.get("field") in FIELDS
            and isinstance(found := _comment(str(change["field"]), change.get("value")), Comment)
            and found.key in keys
        ]
        if kept:
            head = {k: entry[k] for k in ("id", "time") if k in entry}
            kept_entries.append({**head, "changes": kept})
    return msgspec.json.encode({"object": data.get("object"), "entry": kept_entries})


def _others(entries: Any) -> int:
    """Items of the body that are not entries with a list of changes, or that an entry holds
    besides its changes (`messaging`)."""
    if not isinstance(entries, list):
        return 0 if entries is None else 1
    count = 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            count += 1
            continue
        count += sum(1 for k in entry if k not in ("id", "time", "changes"))
        count += sum(1 for change in entry["changes"] if not isinstance(change, dict))
    return count


def _changes(entries: Any) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        return []
    return [
        change
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("changes"), list)
        for change in entry["changes"]
        if isinstance(change, dict)
    ]


def _comment(field: str, value: Any) -> Comment | str:
    if not isinstance(value, dict):
        return f"a {field} change without a value"
    comment_id = _graph_id(value.get("id"))
    media = value.get("media")
    media_id = _graph_id(media.get("id")) if isinstance(media, dict) else None
    if comment_id is None:
        return f"a {field} change without a comment id"
    if media_id is None:
        return f"comment {comment_id} without a media id"
    return Comment(field=field, comment_id=comment_id, media_id=media_id)


def _graph_id(value: Any) -> str | None:
    # Meta sends ids as strings; a number is accepted as the same id.
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if _GRAPH_ID.fullmatch(text) else None
