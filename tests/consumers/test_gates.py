"""The reply gates (pure): when a reply is suppressed instead of sent."""

from __future__ import annotations

import pytest

from consumers.gates import closed_because
from ingress.events import OutboundEntry, OutboundKind
from ingress.topology import Route

DEFAULT = Route(name="default")


def reply(**fields: object) -> OutboundEntry:
    values: dict[str, object] = {"account": 3, "conversation": 1, "content": "hi"}
    values.update(fields)
    return OutboundEntry(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "handler", "status", "last_inbound", "route", "reason"),
    [
        pytest.param(reply(turn="3:1:10"), "bot", "pending", 10, DEFAULT, None, id="open-gate"),
        pytest.param(reply(), "human", "open", 10, DEFAULT, "a human handles", id="human"),
        pytest.param(
            reply(),
            "human",
            "open",
            10,
            Route(name="r", reply_when_human=True),
            None,
            id="human-allowed-by-policy",
        ),
        pytest.param(reply(private=True), "human", "open", 10, DEFAULT, None, id="private-note"),
        pytest.param(
            reply(kind=OutboundKind.HANDOFF, content=""),
            "human",
            "open",
            10,
            DEFAULT,
            None,
            id="actions-not-gated",
        ),
        pytest.param(reply(), "bot", "resolved", 10, DEFAULT, "resolved", id="resolved"),
        pytest.param(
            reply(),
            "bot",
            "resolved",
            10,
            Route(name="r", reply_when_resolved=True),
            None,
            id="resolved-allowed",
        ),
        pytest.param(reply(turn="3:1:10"), "bot", "open", 12, DEFAULT, "superseded", id="stale"),
        pytest.param(
            reply(turn="3:1:10"),
            "bot",
            "open",
            12,
            Route(name="r", superseded="deliver"),
            None,
            id="stale-delivered-by-policy",
        ),
        pytest.param(reply(turn="agent-own-id"), "bot", "open", 12, DEFAULT, None, id="foreign"),
        pytest.param(reply(), None, None, 0, DEFAULT, None, id="unknown-conversation"),
    ],
)
def test_gates(
    entry: OutboundEntry,
    handler: str | None,
    status: str | None,
    last_inbound: int,
    route: Route,
    reason: str | None,
) -> None:
    """Public messages wait for the bot's turn; notes and actions always pass."""
    found = closed_because(
        entry, handler=handler, status=status, last_inbound=last_inbound, route=route
    )
    assert (found is None) if reason is None else (found is not None and reason in found)
