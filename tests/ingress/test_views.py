"""Webhook views: the ingress routes anything; persist's views bound what the database holds."""

from __future__ import annotations

import msgspec
import pytest

from ingress import views


@pytest.mark.parametrize(
    ("body", "account", "conversation"),
    [
        pytest.param(b'{"account":{"id":3},"conversation":{"id":7}}', 3, 7, id="plain"),
        pytest.param(b'{"account":{"id":9223372036854775807}}', 2**63 - 1, None, id="int64-max"),
        pytest.param(b'{"account":{"id":9223372036854775808}}', None, None, id="over-int64"),
        pytest.param(b'{"account":{"id":"99999999999999999999"}}', None, None, id="over-as-text"),
        pytest.param(b'{"conversation":{"id":-9223372036854775809}}', None, None, id="under"),
        pytest.param(b'{"account":{"id":"\\u0663"}}', None, None, id="non-ascii-digit"),
    ],
)
def test_routing_takes_any_id_and_drops_what_cannot_be_one(
    body: bytes, account: int | None, conversation: int | None
) -> None:
    """An id out of int64 routes as no id (the entry is kept; persist says why it is dead)."""
    routing = views.routing_decoder.decode(body)
    assert (routing.account_id_int(), routing.conversation_id_int()) == (account, conversation)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        pytest.param(b'{"event":"e","id":9223372036854775808}', "$.id", id="id-over-int64"),
        pytest.param(b'{"event":"e","id":1,"created_at":99999999999}', "$.created_at", id="2200+"),
        pytest.param(b'{"event":"e","id":1,"created_at":12}', "$.created_at", id="before-2000"),
        pytest.param(b'{"event":"e","id":1,"source_id":"a\\u0000b"}', "$.source_id", id="nul"),
        pytest.param(
            b'{"event":"e","id":1,"conversation":{"id":1,"updated_at":1e400}}',
            "$.conversation.updated_at",
            id="infinite",
        ),
    ],
)
def test_message_view_bounds(body: bytes, path: str) -> None:
    """Out-of-range ids and times and NULs in identity text fail the view at their path."""
    with pytest.raises(msgspec.ValidationError, match=rf"at `\{path}`"):
        views.message_decoder.decode(body)


def test_nul_in_content_passes_the_view() -> None:
    """Message content is free text: a NUL is kept here and replaced at persist."""
    message = views.message_decoder.decode(b'{"event":"e","id":1,"content":"a\\u0000b"}')
    assert message.content == "a\x00b"
