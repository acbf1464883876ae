"""What every ops view is handed: the connections, the topology, the guard and the clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import redis.asyncio as aioredis
from starlette.requests import Request

from consumers import egress
from consumers.opsapp.guard import Guard
from consumers.store import Store
from ingress.topology import Topology

STATUSES = frozenset({"open", "pending", "resolved", "snoozed"})
HANDLERS = frozenset({"bot", "human"})
OUTCOMES = frozenset({"applied", "duplicate", "ignored", "dead"})
MAX_LIMIT = 1_000


class Context:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: Store,
        topology: Topology,
        guard: Guard,
        clock: Callable[[], dt.datetime],
        egress_policy: egress.Policy | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.topology = topology
        self.guard = guard
        self.clock = clock
        # Where worker apps may point (ALLOW_HTTP_APPS, ALLOW_PRIVATE_APPS): https, public.
        self.egress = egress_policy or egress.Policy(allow_http=False, allow_private=False)


def context(request: Request) -> Context:
    found: Context = request.app.state.ops
    return found
