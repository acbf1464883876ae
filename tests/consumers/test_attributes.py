"""Contact and conversation attributes as persist stores them: objects kept, anything else
left out, never an error."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers import attributes
from ingress import views


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        pytest.param(b'{"plan":"pro","n":[1,null]}', '{"plan":"pro","n":[1,null]}', id="object"),
        pytest.param(b"{}", "{}", id="empty"),
        pytest.param(b"", None, id="absent"),
        pytest.param(b"null", None, id="null"),
        pytest.param(b"[1]", None, id="a-list"),
        pytest.param(b'"x"', None, id="a-string"),
        pytest.param(b'{"n":1e400}', None, id="a-number-past-float"),
        pytest.param(b'{"s":"\\ud800"}', None, id="a-lone-surrogate"),
        pytest.param(b'{"k\\u0000":"v\\u0000"}', '{"k\ufffd":"v\ufffd"}', id="nul-replaced"),
    ],
)
def test_jsonb_keeps_objects_only(raw: bytes, stored: str | None) -> None:
    """An attributes value is stored when it is a JSON object PostgreSQL can hold."""
    assert attributes.jsonb(msgspec.Raw(raw)) == stored


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        pytest.param(b'"Website"', "Website", id="text"),
        pytest.param(b'"Web\\u0000site"', "Web\ufffdsite", id="nul-replaced"),
        pytest.param(b"12", None, id="a-number"),
        pytest.param(b"", None, id="absent"),
        pytest.param(b'"\\udc00"', None, id="a-lone-surrogate"),
    ],
)
def test_text_keeps_text_only(raw: bytes, stored: str | None) -> None:
    assert attributes.text(msgspec.Raw(raw)) == stored


def test_a_message_sender_and_its_conversation() -> None:
    """Read from a message webhook: the sender's attributes, the conversation's, the inbox name."""
    body = (
        b'{"event":"message_created","id":1,"inbox":{"id":11,"name":"Website"},'
        b'"sender":{"id":5,"custom_attributes":{"plan":"pro"}},'
        b'"conversation":{"id":9,"custom_attributes":{"order":"A-1"},'
        b'"additional_attributes":{"referer":"https://x.test"}}}'
    )
    msg = views.message_decoder.decode(body)
    assert msg.conversation is not None
    assert attributes.of_contact(msg.sender) == attributes.ContactAttributes(
        custom_attributes='{"plan":"pro"}', additional_attributes=None
    )
    assert attributes.of_conversation(msg.conversation, msg.inbox) == (
        attributes.ConversationExtras(
            custom_attributes='{"order":"A-1"}',
            additional_attributes='{"referer":"https://x.test"}',
            inbox_name="Website",
        )
    )
    assert attributes.of_contact(None) == attributes.ContactAttributes()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_any_json_is_stored_or_left_out_never_an_error(value: object) -> None:
    """Whatever JSON a webhook holds there, the result is None or NUL-free object text."""
    raw = msgspec.json.encode(value)
    stored = attributes.jsonb(msgspec.Raw(raw))
    assert stored is None or (stored.startswith("{") and "\\u0000" not in stored)
    assert (stored is None) == (not isinstance(value, dict))
