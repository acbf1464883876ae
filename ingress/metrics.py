"""GET /metrics: the ingress's own counters, and the pipeline's state read from Redis at
scrape time (stream lengths, group backlogs, open breakers, and the counters every consumer
process adds to the `<prefix>:metrics` hash), so one scrape shows every process."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.exceptions import ResponseError

from ingress.connect import UNAVAILABLE
from ingress.topology import Topology

# The installed distribution's version, as /health, /metrics and `switchboard doctor` show it.
VERSION = metadata.version("chatwoot-switchboard")

# What the consumer processes observe into `<prefix>:metrics:series` (consumers/counters.py
# writes it; its docstring has the field format), with the help /metrics gives each. Listed
# here so that every family shows on /metrics (empty) before its first observation.
HISTOGRAMS = {
    "switchboard_webhook_stored_seconds": "Webhook received by the ingress to stored (commit)",
    "switchboard_turn_emitted_seconds": "Customer message stored to its turn emitted",
    "switchboard_reply_posted_seconds": "Reply queued to posted to Chatwoot",
    "switchboard_chatwoot_request_seconds": "Chatwoot API calls, by endpoint and status",
}
LABELLED_COUNTERS = {
    "switchboard_dead_letters": "Entries dead-lettered, by group and reason",
}


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
        Gauge(
            "switchboard_build_info", "The running ingress's version (always 1)",
            ["version"], registry=self.registry,
        ).labels(version=VERSION).set(1)  # fmt: skip
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
        series: Any = await redis.hgetall(f"{self.topology.key('metrics')}:series")
        observed = _series({_text(k): float(v) for k, v in series.items()})
        return [up, length, pending, lag, counters, breakers, *observed]


class _Histogram:
    def __init__(self) -> None:
        self.buckets: dict[str, float] = {}
        self.sum = 0.0


def _series(fields: dict[str, float]) -> list[Metric]:
    """The histograms and labelled counters of the series hash (see consumers/counters.py),
    buckets made cumulative as Prometheus wants them. A field of another shape is skipped."""
    histograms: dict[str, dict[str, _Histogram]] = {name: {} for name in HISTOGRAMS}
    counted: dict[str, dict[str, float]] = {name: {} for name in LABELLED_COUNTERS}
    for field, value in fields.items():
        kind, _, rest = field.partition("|")
        if kind == "c":
            metric, _, labels = rest.partition("|")
            counted.setdefault(metric, {})[labels] = value
        elif kind == "h" and rest.count("|") == 2:
            metric, labels, part = rest.split("|")
            histogram = histograms.setdefault(metric, {}).setdefault(labels, _Histogram())
            if part == "sum":
                histogram.sum = value
            elif part != "count":
                histogram.buckets[part] = value
    families: list[Metric] = []
    for metric, by_labels in sorted(histograms.items()):
        names = _label_names(by_labels)
        family = HistogramMetricFamily(metric, HISTOGRAMS.get(metric, metric), labels=names)
        for labels, histogram in sorted(by_labels.items()):
            family.add_metric(_label_values(labels, names), _cumulative(histogram.buckets),
                              sum_value=histogram.sum)  # fmt: skip
        families.append(family)
    for metric, values in sorted(counted.items()):
        names = _label_names(values)
        family_c = CounterMetricFamily(metric, LABELLED_COUNTERS.get(metric, metric), labels=names)
        for labels, value in sorted(values.items()):
            family_c.add_metric(_label_values(labels, names), value)
        families.append(family_c)
    return families


def _label_names(by_labels: dict[str, Any]) -> list[str]:
    names: set[str] = set()
    for labels in by_labels:
        names.update(pair.partition("=")[0] for pair in labels.split(",") if pair)
    return sorted(names)


def _label_values(labels: str, names: list[str]) -> list[str]:
    pairs = dict(pair.partition("=")[::2] for pair in labels.split(",") if pair)
    return [pairs.get(name, "") for name in names]


def _cumulative(buckets: dict[str, float]) -> list[tuple[str, float]]:
    """Per-bucket counts to Prometheus's running totals, `+Inf` (every observation) last."""
    bounds = sorted((b for b in buckets if _bound(b) is not None), key=lambda b: _bound(b) or 0.0)
    out: list[tuple[str, float]] = []
    total = 0.0
    for bound in bounds:
        total += buckets[bound]
        out.append((bound, total))
    out.append(("+Inf", total + buckets.get("+Inf", 0.0)))
    return out


def _bound(text: str) -> float | None:
    """A finite bucket bound; None for `+Inf` and for what is no number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value != float("inf") else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
