"""Comments in a Meta webhook body (pure): what is routed, and what each app gets."""

from __future__ import annotations

import json

import msgspec
import pytest

from consumers import comments
from consumers.comments import Comment
from tests import meta


def test_one_comment_is_found_with_its_key() -> None:
    """A comment change gives its field, comment id and media id; its key is (field, id)."""
    parsed = comments.parse(meta.comment("111", "222"))
    assert parsed.comments == [Comment(field="comments", comment_id="222", media_id="111")]
    assert parsed.comments[0].key == "comments:222"
    assert (parsed.unusable, parsed.others) == ([], 0)


def test_a_batch_is_every_comment_once() -> None:
    """Several entries and changes: every comment, in order, a comment named twice once;
    live comments too; other fields are not comments."""
    body = json.dumps(
        {
            "object": "instagram",
            "entry": [
                {"id": "1", "time": 1, "changes": [meta.change("10", "100"),
                                                    meta.change("10", "100")]},
                {"id": "2", "time": 1, "changes": [meta.change("20", "200", field="live_comments"),
                                                    {"field": "mentions", "value": {}}]},
            ],
        }
    ).encode()  # fmt: skip
    parsed = comments.parse(body)
    assert [c.key for c in parsed.comments] == ["comments:100", "live_comments:200"]
    assert parsed.others == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param({"media": {"id": "1"}}, "without a comment id", id="no-comment-id"),
        pytest.param({"id": "5"}, "without a media id", id="no-media"),
        pytest.param(
            {"id": "5", "media": {"id": "../me/accounts"}},
            "without a media id",
            id="path-in-media-id",
        ),  # fmt: skip
        pytest.param({"id": "5", "media": {"id": True}}, "without a media id", id="bool-id"),
        pytest.param("text", "without a value", id="value-not-object"),
    ],
)
def test_a_comment_that_cannot_be_routed_is_named_not_guessed(value: object, reason: str) -> None:
    """No usable comment or media id (a media id is digits only: it goes into a Graph URL
    path and a Redis key): the change is listed as unusable, the others still routed."""
    body = meta.webhook({"field": "comments", "value": value}, meta.change("7", "8"))
    parsed = comments.parse(body)
    assert [c.key for c in parsed.comments] == ["comments:8"]
    [said] = parsed.unusable
    assert reason in said


@pytest.mark.parametrize("body", [b"[]", b"nope", b'"x"'])
def test_a_body_that_is_not_an_object_is_unreadable(body: bytes) -> None:
    """Not a JSON object: nothing in it can be routed (the forward dead-letters it)."""
    with pytest.raises(comments.Unreadable):
        comments.parse(body)


@pytest.mark.parametrize("body", [b"{}", b'{"entry": 5}', b'{"entry": [1, {"changes": "x"}]}'])
def test_odd_shapes_hold_no_comment(body: bytes) -> None:
    """Whatever the shape inside an object, parsing never fails: it finds no comment."""
    assert comments.parse(body).comments == []


def test_an_app_gets_the_original_bytes_when_all_is_its_own() -> None:
    """The usual webhook (its comments all for one app) is forwarded byte for byte."""
    body = meta.comment("1", "2")
    assert comments.only(body, {"comments:2"}) is body


def test_an_app_never_sees_another_accounts_comments() -> None:
    """A batch holding comments for two apps: each gets a copy holding only its own, in the
    same shape, and nothing else the body held (direct messages)."""
    data = {
        "object": "instagram",
        "entry": [
            {"id": "1", "time": 5, "changes": [meta.change("10", "100")]},
            {"id": "2", "time": 6, "changes": [meta.change("20", "200")]},
            {"id": "2", "time": 7, "messaging": [{"message": {"text": "private"}}]},
        ],
    }
    body = json.dumps(data).encode()
    mine = msgspec.json.decode(comments.only(body, {"comments:200"}))
    assert mine == {
        "object": "instagram",
        "entry": [{"id": "2", "time": 6, "changes": [meta.change("20", "200")]}],
    }
    whole = comments.only(meta.webhook(meta.change("1", "2"), meta.change("1", "3")),
                          {"comments:2", "comments:3"})  # fmt: skip
    assert comments.parse(whole).comments[1].key == "comments:3"
