"""streams.yaml: loading, validation and routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingress import topology
from ingress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = b"""
streams: {events: {}, turns: {}, outbound: {}, dead: {}}
groups:
  persist: {stream: events}
routes:
  - {name: sales, stream: "turns:sales", inbox: 12}
  - {name: rest}
"""


def test_repository_streams_yaml_loads() -> None:
    """The shipped streams.yaml is valid and names the contract's keys."""
    loaded = topology.load(ROOT / "streams.yaml")
    assert [loaded.key(s) for s in ("events", "turns", "outbound", "dead")] == [
        "sb:events",
        "sb:turns",
        "sb:outbound",
        "sb:dead",
    ]
    assert set(loaded.groups) == {"persist", "deliver", "push"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            MINIMAL.replace(b"groups:", b"group_typo: 1\ngroups:"),
            "unknown field `group_typo`",
            id="unknown-top-key",
        ),
        pytest.param(
            MINIMAL.replace(b"{stream: events}", b"{stream: events, batchsize: 3}"),
            "unknown field `batchsize`",
            id="unknown-group-key",
        ),
        pytest.param(
            MINIMAL.replace(b"{stream: events}", b"{stream: nowhere}"),
            "group `persist` reads unknown stream `nowhere`",
            id="unknown-stream",
        ),
        pytest.param(
            MINIMAL.replace(b"dead: {}", b""), "`streams` lacks dead", id="missing-stream"
        ),
        pytest.param(
            MINIMAL.replace(b"{stream: events}", b"{stream: events, batch: 0}"),
            "`batch` must be at least 1",
            id="zero-batch",
        ),
        pytest.param(
            MINIMAL.replace(b'"turns:sales"', b"outbound"),
            "route `sales`: stream must be",
            id="route-to-non-turn-stream",
        ),
        pytest.param(
            MINIMAL.replace(b"groups:", b"turns: {answer_within_s: -1}\ngroups:"),
            "`answer_within_s` and `max_holds` must not be negative",
            id="negative-answer-deadline",
        ),
        pytest.param(
            MINIMAL.replace(b"{name: rest}", b"{name: rest, max_holds: -2}"),
            "`answer_within_s` and `max_holds` must not be negative",
            id="negative-route-holds",
        ),
        pytest.param(
            b'prefix: "sb{x}"\n' + MINIMAL,
            "prefix 'sb{x}': braces are not allowed",
            id="brace-in-prefix",
        ),
        pytest.param(
            MINIMAL.replace(b'"turns:sales"', b'"turns:{sales}"'),
            "braces are not allowed",
            id="brace-in-route-stream",
        ),
        pytest.param(b"streams: [", "not valid YAML", id="bad-yaml"),
    ],
)
def test_problems_name_what_is_wrong(text: bytes, message: str) -> None:
    """Every mistake in streams.yaml is a ConfigError naming the key at fault."""
    with pytest.raises(ConfigError, match="streams.yaml") as caught:
        topology.parse(text)
    assert message in str(caught.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A missing file names its path."""
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        topology.load(tmp_path / "nope.yaml")


def test_first_matching_route_wins() -> None:
    """Routes are tried in order; unset fields match anything."""
    loaded = topology.parse(MINIMAL)
    sales = loaded.route_for(account=3, inbox=12, channel="Channel::Whatsapp")
    other = loaded.route_for(account=3, inbox=11, channel="Channel::WebWidget")
    assert (
        sales is not None and sales.name == "sales" and loaded.key(sales.stream) == "sb:turns:sales"
    )
    assert other is not None and other.name == "rest"


def test_no_route_means_no_turns() -> None:
    """A conversation no route matches has no route."""
    loaded = topology.parse(MINIMAL.replace(b"  - {name: rest}\n", b""))
    assert loaded.route_for(account=3, inbox=11, channel=None) is None


def test_routes_naming_an_app_add_their_streams_to_the_push_group() -> None:
    """The push group reads its own stream and the stream of every route naming an app."""
    loaded = topology.parse(
        MINIMAL.replace(b"  - {name: rest}\n", b"  - {name: bot, stream: 'turns:bot', app: echo}\n")
    )
    assert loaded.push_streams("turns") == ["turns", "turns:bot"]
    route = loaded.route_named("bot")
    assert route is not None and route.app == "echo"


def test_an_app_name_is_checked() -> None:
    """A route's `app` must be a worker app's name."""
    with pytest.raises(ConfigError, match="`app` must be"):
        topology.parse(MINIMAL.replace(b"{name: rest}", b"{name: rest, app: 'Not An App'}"))
