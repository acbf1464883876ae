"""How `consume` wires its workers: client timeouts longer than what waits on them."""

from __future__ import annotations

import msgspec

from consumers.service import redis_timeouts
from ingress.topology import Topology


def test_redis_read_timeout_outlasts_the_longest_block(topology: Topology) -> None:
    """An idle XREADGROUP BLOCK never ends as a socket timeout; a dead Redis still ends a call."""
    slow = msgspec.structs.replace(topology.groups["persist"], block_ms=20_000)
    groups = {**topology.groups, "persist": slow}
    read_s, connect_s = redis_timeouts(msgspec.structs.replace(topology, groups=groups))
    assert 20.0 < read_s <= 30.0
    assert 0 < connect_s <= 5.0
