"""Bounded memory: streams trimmed once every group is past an entry, the dead stream capped,
the audit trail expired."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from consumers.clock import utcnow
from consumers.polling import PollingWorker
from consumers.store import Store
from consumers.store.pushes import PushSQL
from ingress.topology import Topology

log = structlog.get_logger("retention")


def _older(a: str, b: str) -> str:
    ams, aseq = (int(x) for x in a.split("-"))
    bms, bseq = (int(x) for x in b.split("-"))
    return a if (ams, aseq) <= (bms, bseq) else b


async def safe_minid(redis: aioredis.Redis, key: str) -> str | None:
    """The oldest entry some group still needs (pending, or not yet delivered), or None when the
    stream has no group (nothing can be known to be consumed)."""
    try:
        groups: Any = await redis.xinfo_groups(key)
    except ResponseError:
        return None  # no such stream
    if not groups:
        return None
    oldest: str | None = None
    for group in groups:
        name = group["name"]
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        summary: Any = await redis.xpending(key, name)
        if summary["pending"]:
            first = summary["min"]
            need = first.decode() if isinstance(first, bytes) else str(first)
        else:
            # Everything up to last-delivered is acknowledged: the next one is still needed.
            ms, seq = (int(x) for x in last.split("-"))
            need = f"{ms}-{seq + 1}"
        oldest = need if oldest is None else _older(oldest, need)
    return oldest


class Retention(PollingWorker):
    name = "retention"
    batch = 1  # one sweep a period

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        topology: Topology,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        super().__init__()
        self.store = store
        self.redis = redis
        self.topology = topology
        self.clock = clock
        self.poll_s = topology.retention.trim_every_ms / 1000

    async def step(self) -> int:
        await self.sweep()
        return 0  # then wait a period

    async def sweep(self) -> dict[str, int]:
        """Trim every stream as far as is safe; expire old audit rows. What was removed."""
        removed: dict[str, int] = {}
        for key in self.topology.stream_keys():
            name = key.removeprefix(f"{self.topology.prefix}:")
            spec = self.topology.streams.get(name.split(":")[0])
            minid = await safe_minid(self.redis, key)
            count = 0
            if minid is not None:
                count += int(await self.redis.xtrim(key, minid=minid, approximate=False))
            if spec is not None and spec.maxlen is not None:
                count += int(await self.redis.xtrim(key, maxlen=spec.maxlen, approximate=True))
            if count:
                removed[key] = count
        cutoff = self.clock() - dt.timedelta(days=self.topology.retention.audit_days)
        async with self.store.transaction() as tx:
            expired = await tx.expire_audit(cutoff)
            pushed = await PushSQL(tx.conn).expire_pushes(cutoff)
        if expired:
            removed["webhook_events"] = expired
        if pushed:
            removed["pushes"] = pushed
        if removed:
            log.info("retention.swept", removed=removed)
        return removed
