"""Inline answers of worker apps as sb:outbound entries (pure)."""

from __future__ import annotations

import pytest

from consumers import inline

TURN = "3:7:903"


def parse(answer: bytes) -> inline.Replies:
    return inline.replies_of(answer, turn=TURN, account=3, conversation=7)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"OK", id="text"),
        pytest.param(b"[1, 2]", id="list"),
        pytest.param(b'{"status": "queued"}', id="no-replies"),
    ],
)
def test_answers_without_replies(answer: bytes) -> None:
    """An answer that carries no replies: the app may answer later over POST /outbound."""
    assert parse(answer) == inline.NONE


def test_refs_turn_and_conversation_come_from_the_turn() -> None:
    """Each reply's ref is `<turn>:<index>` unless it gives its own; account and
    conversation default to the turn's."""
    replies = parse(
        b'{"replies": [{"content": "a"}, {"content": "b", "ref": "r-2"}, {"kind": "handoff"}]}'
    )
    assert [(r.ref, r.turn, r.account, r.conversation) for r in replies.good] == [
        (f"{TURN}:0", TURN, 3, 7), ("r-2", TURN, 3, 7), (f"{TURN}:2", TURN, 3, 7)
    ]  # fmt: skip
    assert replies.bad == []


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        pytest.param(b'{"replies": [{"content": ""}]}', "content", id="empty-content"),
        pytest.param(b'{"replies": [{"content": "x", "privat": true}]}', "privat", id="typo"),
        pytest.param(b'{"replies": [{"content": "x", "account": 4}]}', "account", id="account"),
        pytest.param(
            b'{"replies": [{"content": "x", "conversation": 8}]}', "conversation", id="conversation"
        ),  # fmt: skip
        pytest.param(b'{"replies": ["x"]}', "object", id="not-an-object"),
        pytest.param(b'{"replies": [{"content": "x", "ref": ""}]}', "ref", id="empty-ref"),
    ],
)
def test_a_bad_reply_is_set_apart_with_its_reason(answer: bytes, why: str) -> None:
    """A reply that does not validate is returned apart, naming the problem."""
    replies = parse(answer)
    assert replies.good == []
    [bad] = replies.bad
    assert bad.index == 0 and why in bad.reason


def test_a_bad_answer_is_one_bad_entry() -> None:
    """`replies` that is not a list: the whole answer is set apart."""
    replies = parse(b'{"replies": 5}')
    assert replies.good == [] and replies.bad[0].index is None
