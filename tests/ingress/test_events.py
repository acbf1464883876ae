"""The stream entry types and their flat field-map codec."""

from __future__ import annotations

import msgspec
import pytest

from ingress import events
from ingress.errors import EntryDecodeError


def roundtrip(entry: events.Entry) -> events.Entry:
    fields = {k.encode(): v for k, v in events.encode(entry).items()}
    return events.decode(type(entry), fields)


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(
            events.EventEntry(
                event="message_created",
                delivery="d-1",
                account=3,
                conversation=None,
                received_at=1781775667000,
                signed=True,
                body=b'{"a":"\\u003c"}\x00\xff',
            ),
            id="event",
        ),
        pytest.param(
            events.TurnEntry(
                turn="3:1042:918301",
                account=3,
                inbox=11,
                conversation=1042,
                channel="Channel::WebWidget",
                contact=5501,
                through=918301,
                messages=[
                    events.TurnMessage(
                        id=918301,
                        content="Hi",
                        attachments=[events.Attachment(file_type="image", data_url="u")],
                        created_at="2026-06-18T09:41:07.211Z",
                    )
                ],
                route="default",
            ),
            id="turn",
        ),
        pytest.param(
            events.TurnEntry(
                turn="3:1043:918305",
                account=3,
                conversation=1043,
                through=918305,
                messages=[events.TurnMessage(id=918305, content="VAT?", created_at="t")],
                route="default",
                history=[
                    events.HistoryMessage(
                        id=918301,
                        direction="outbound",
                        sender_kind="agent_bot",
                        sender_id=4,
                        content="Hello! How can I help?",
                        content_type="text",
                        created_at="t0",
                    )
                ],
                contact_details=events.TurnContact(
                    id=5502, name="Daniel", custom_attributes={"plan": "pro", "seats": [1, 2]}
                ),
                inbox_name="Website",
                labels=["vip"],
                custom_attributes={"order": "A-1"},
                additional_attributes={"referer": "https://www.acme.test/"},
            ),
            id="rich-turn",
        ),
        pytest.param(
            events.OutboundEntry(
                account=3,
                conversation=1042,
                content="Olá <b>",
                ref="r-1",
                private=True,
                content_attributes={"x": [1, 2]},
            ),
            id="outbound",
        ),
    ],
)
def test_entries_roundtrip(entry: events.Entry) -> None:
    """Every entry type survives encode then decode unchanged (raw bytes included)."""
    assert roundtrip(entry) == entry


def test_encoding_is_readable_in_redis_cli() -> None:
    """Scalars are plain text, booleans 1/0, absent values empty, nested values JSON."""
    fields = events.encode(
        events.OutboundEntry(account=3, conversation=7, content="hi", content_attributes={"a": 1})
    )
    assert fields == {
        "account": b"3",
        "conversation": b"7",
        "content": b"hi",
        "ref": b"",
        "turn": b"",
        "kind": b"message",
        "private": b"0",
        "content_attributes": b'{"a":1}',
        "inbox": b"",
        "source_id": b"",
        "contact": b"",
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({b"event": b"x", b"signed": b"1", b"body": b""}, "received_at", id="missing"),
        pytest.param(
            {b"event": b"x", b"received_at": b"soon", b"signed": b"1", b"body": b""},
            "field `received_at`",
            id="not-an-int",
        ),
        pytest.param(
            {b"event": b"x", b"received_at": b"1", b"signed": b"yes", b"body": b""},
            "field `signed`: expected 1 or 0",
            id="not-a-bool",
        ),
        pytest.param(
            {b"event": b"\xff", b"received_at": b"1", b"signed": b"1", b"body": b""},
            "field `event`",
            id="not-utf8",
        ),
    ],
)
def test_decode_errors_name_the_field(fields: dict[bytes, bytes], message: str) -> None:
    """An entry that breaks the contract is an EntryDecodeError naming the field."""
    with pytest.raises(EntryDecodeError, match=message):
        events.decode(events.EventEntry, fields)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"account":1,"conversation":2}', "`content` must not be empty", id="empty"),
        pytest.param(
            b'{"account":1,"conversation":2,"content":"x","privat":true}',
            "unknown field `privat`",
            id="unknown-field",
        ),
        pytest.param(
            b'{"account":1,"conversation":2,"content":"x","kind":"shout"}',
            "Invalid enum value 'shout'",
            id="bad-kind",
        ),
        pytest.param(b'{"account":0,"conversation":2,"content":"x"}', "positive", id="zero-id"),
        pytest.param(
            b'{"account":1,"conversation":2,"kind":"handoff"}', None, id="handoff-needs-no-text"
        ),
        pytest.param(b'{"account":1,"conversation":2,"kind":"hold"}', None, id="hold"),
    ],
)
def test_outbound_validation(body: bytes, message: str | None) -> None:
    """An outbound request is refused with a message naming the field, or accepted."""
    if message is None:
        assert msgspec.json.decode(body, type=events.OutboundEntry).kind in ("handoff", "hold")
        return
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(body, type=events.OutboundEntry)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"account":1,"content":"x"}', "give `conversation`", id="nowhere"),
        pytest.param(b'{"account":1,"content":"x","inbox":2}', "`source_id`", id="no-source"),
        pytest.param(
            b'{"account":1,"inbox":2,"source_id":"+1","kind":"resolve"}',
            "needs an existing `conversation`",
            id="action-without-conversation",
        ),
        pytest.param(
            b'{"account":1,"inbox":2,"source_id":"+1","kind":"hold"}',
            "a `hold` needs an existing `conversation`",
            id="hold-without-conversation",
        ),
    ],
)
def test_starting_a_conversation_needs_inbox_and_source(body: bytes, message: str) -> None:
    """A reply without a conversation must say where to start one."""
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.json.decode(body, type=events.OutboundEntry)
