"""`DeadEntry`: the one wire type of `sb:dead`, flat beside the original entry's fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress import events


def roundtrip(entry: events.DeadEntry) -> events.DeadEntry:
    return events.decode(events.DeadEntry, events.wire(events.encode(entry)))


def test_roundtrip_keeps_meta_and_original_fields() -> None:
    """Meta and the original fields come back as written; on the wire they lie flat."""
    entry = events.DeadEntry(
        stream="sb:{events}",
        group="persist",
        id="1718700000000-0",
        deliveries=5,
        reason="permanent",
        error="ValueError: bad",
        original={"event": b"message_created", "body": b"\x00\xff{}"},
    )
    assert roundtrip(entry) == entry
    assert events.encode(entry) == {
        "event": b"message_created",
        "body": b"\x00\xff{}",
        "stream": b"sb:{events}",
        "group": b"persist",
        "id": b"1718700000000-0",
        "deliveries": b"5",
        "reason": b"permanent",
        "error": b"ValueError: bad",
    }


@pytest.mark.parametrize("name", [*events.DEAD_META, "_reason", "__id", "_"])
def test_an_original_field_named_like_meta_cannot_clobber_it(name: str) -> None:
    """An original `reason`/`id`/... (or `_`-prefixed) field is escaped: the meta stands, and
    the original field comes back under its own name."""
    entry = events.DeadEntry(
        stream="sb:{outbound}",
        group="deliver",
        id="2-0",
        deliveries=3,
        reason="permanent",
        error="404",
        original={name: b"from the agent", "content": b"hi"},
    )
    back = roundtrip(entry)
    assert back == entry
    assert back.reason == "permanent" and back.id == "2-0"


@given(
    original=st.dictionaries(st.text(min_size=1, max_size=12), st.binary(max_size=20)),
    reason=st.text(max_size=20),
    deliveries=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_any_original_fields_roundtrip(
    original: dict[str, bytes], reason: str, deliveries: int | None
) -> None:
    """Whatever the original entry's field names, nothing is lost or overwritten."""
    entry = events.DeadEntry(
        stream="s", group="g", id="1-0", deliveries=deliveries, reason=reason, original=original
    )
    assert roundtrip(entry) == entry


def test_decoding_never_fails_on_what_lies_in_the_dead_stream() -> None:
    """A hand-written or old entry decodes (missing meta empty, odd deliveries None), so ops
    can always see and purge it."""
    back = events.decode(events.DeadEntry, {b"deliveries": b"many", b"x": b"\xff"})
    assert back == events.DeadEntry(deliveries=None, original={"x": b"\xff"})


@given(fields=st.dictionaries(st.binary(min_size=1, max_size=12), st.binary(max_size=20)))
def test_any_bytes_field_names_roundtrip_through_a_dead_letter(
    fields: dict[bytes, bytes],
) -> None:
    """Field names as read from Redis, UTF-8 or not, are dead-lettered and come back (and go
    back on the wire) byte for byte."""
    entry = events.DeadEntry(stream="s", group="g", id="1-0", original=events.plain(fields))
    assert events.wire(events.plain(fields)) == fields
    back = roundtrip(entry)
    assert back == entry
    assert events.wire(back.original) == fields


def test_a_non_utf8_field_name_is_shown_escaped() -> None:
    """A name holding bytes that are not UTF-8 prints as escapes, never an encoding error."""
    [name] = events.plain({b"a\xffb": b""})
    assert events.shown(name) == "a\\xffb"
