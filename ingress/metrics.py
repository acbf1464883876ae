"""GET /metrics: the ingress's own counters, and the pipeline's state read from Redis at
scrape time (stream lengths, group backlogs, open breakers, and the counters every consumer
process adds to the `<prefix>:metrics` hash), so one scrape shows every process."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.exceptions import ResponseError

from ingress.connect import UNAVAILABLE
from ingress.topology import Topology


class Snapshot:
    """Pipeline state read from Redis for one scrape, as Prometheus metric families."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> list[Metric]:
        return self.families


class Metrics:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "switchboard_webhooks", "Webhooks by what the ingress did with them",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.spool_bytes = Gauge(
            "switchboard_spool_bytes", "Bytes waiting in this ingress's spool",
            registry=self.registry,
        )  # fmt: skip
        self.snapshot = Snapshot()
        self.registry.register(self.snapshot)

    async def render(self, redis: aioredis.Redis, spool_bytes: int) -> bytes:
        self.spool_bytes.set(spool_bytes)
        try:
            self.snapshot.families = await self._read(redis)
        except UNAVAILABLE:
            self.snapshot.families = [
                GaugeMetricFamily("switchboard_redis_up", "Redis answered the scrape", value=0)
            ]
        return bytes(generate_latest(self.registry))

    async def _read(self, redis: aioredis.Redis) -> list[Metric]:
        length = GaugeMetricFamily(
            "switchboard_stream_length", "Entries in a stream", labels=["stream"]
        )
        pending = GaugeMetricFamily(
            "switchboard_group_pending", "Entries delivered to a group, not yet acknowledged",
            labels=["stream", "group"],
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "switchboard_group_lag", "Entries not yet read by a group (Redis 7+)",
            labels=["stream", "group"],
        )  # fmt: skip
        for key in self.topology.stream_keys():
            length.add_metric([key], float(await redis.xlen(key)))
            try:
                groups: Any = await redis.xinfo_groups(key)
            except ResponseError:
                groups = []
            for group in groups:
                labels = [key, _text(group["name"])]
                pending.add_metric(labels, float(group["pending"]))
                if group.get("lag") is not None:
                    lag.add_metric(labels, float(group["lag"]))
        counters = CounterMetricFamily(
            "switchboard_events", "Counts kept by the consumer processes", labels=["name"]
        )
        raw: Any = await redis.hgetall(self.topology.key("metrics"))
        for field, value in sorted(raw.items()):
            counters.add_metric([_text(field)], float(value))
        breakers = GaugeMetricFamily(
            "switchboard_breaker_open_until", "Accounts whose breaker is open (epoch seconds)",
            labels=["account"],
        )  # fmt: skip
        pattern = f"{{{self.topology.key('outbound')}}}:breaker:*"
        async for key in redis.scan_iter(match=pattern):
            account = _text(key).rsplit(":", 1)[-1]
            until: Any = await redis.hget(key, "open_until")
            if account.isdigit() and until and float(until) > 0:
                breakers.add_metric([account], float(until))
        up = GaugeMetricFamily("switchboard_redis_up", "Redis answered the scrape", value=1)
        return [up, length, pending, lag, counters, breakers]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
