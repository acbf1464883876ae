"""What ops look at: stream and group health (the dead letters are in `dlq`)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ingress.topology import Topology

LAG_SCAN_LIMIT = 10_000


class GroupStatus(msgspec.Struct, kw_only=True):
    name: str
    consumers: int
    pending: int
    lag: int | None  # entries not yet read by the group; None when over LAG_SCAN_LIMIT
    oldest_pending_s: float | None


class StreamStatus(msgspec.Struct, kw_only=True):
    key: str
    length: int
    groups: list[GroupStatus]


async def streams(redis: aioredis.Redis, topology: Topology) -> list[StreamStatus]:
    out = []
    for key in topology.stream_keys():
        length = int(await redis.xlen(key))
        try:
            infos = await redis.xinfo_groups(key)
        except ResponseError:
            infos = []  # no such stream yet
        groups = [await _group_status(redis, key, info) for info in infos]
        out.append(StreamStatus(key=key, length=length, groups=groups))
    return out


async def _group_status(redis: aioredis.Redis, key: str, info: dict[str, Any]) -> GroupStatus:
    name = _text(info["name"])
    lag = info.get("lag")
    if lag is None:  # Redis before 7 does not say: count what lies past last-delivered-id
        last = _text(info["last-delivered-id"])
        after: Any = await redis.xrange(key, min=f"({last}", max="+", count=LAG_SCAN_LIMIT + 1)
        lag = len(after) if len(after) <= LAG_SCAN_LIMIT else None
    summary = await redis.xpending(key, name)
    oldest = None
    if summary["pending"]:
        first_ms = int(_text(summary["min"]).split("-")[0])
        oldest = round(max(0.0, time.time() - first_ms / 1000), 1)
    return GroupStatus(
        name=name,
        consumers=int(info["consumers"]),
        pending=int(summary["pending"]),
        lag=int(lag) if lag is not None else None,
        oldest_pending_s=oldest,
    )


def render(statuses: list[StreamStatus]) -> str:
    rows = [("stream", "length", "group", "consumers", "lag", "pending", "oldest pending")]
    for s in statuses:
        if not s.groups:
            rows.append((s.key, str(s.length), "-", "", "", "", ""))
        for g in s.groups:
            lag = str(g.lag) if g.lag is not None else f">{LAG_SCAN_LIMIT}"
            oldest = f"{g.oldest_pending_s}s" if g.oldest_pending_s is not None else "-"
            rows.append(
                (s.key, str(s.length), g.name, str(g.consumers), lag, str(g.pending), oldest)
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
