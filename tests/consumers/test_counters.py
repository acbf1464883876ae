"""Histograms and labelled counters the consumer processes add up in Redis, as the ingress's
/metrics serves them: one view of every process."""

from __future__ import annotations

import math

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from consumers import counters
from consumers.counters import Counters
from ingress.metrics import HISTOGRAMS, LABELLED_COUNTERS, Metrics
from ingress.topology import Topology


@pytest.mark.parametrize(
    ("seconds", "bound"),
    [
        pytest.param(0.0, "0.001", id="zero"),
        pytest.param(0.001, "0.001", id="on-a-bound"),
        pytest.param(0.0011, "0.0025", id="just-above"),
        pytest.param(299.0, "300", id="last-bound"),
        pytest.param(301.0, "+Inf", id="over-all"),
        pytest.param(math.inf, "+Inf", id="infinite"),
    ],
)
def test_bucket(seconds: float, bound: str) -> None:
    """An observation lands in the first bucket whose bound is at least it (Prometheus's le)."""
    assert counters.bucket(seconds) == bound


@pytest.mark.parametrize(
    ("path", "label"),
    [
        pytest.param("/api/v1/accounts/3/conversations/1046/messages",
                     "conversations/:id/messages", id="create-message"),
        pytest.param("/api/v1/accounts/3/conversations/9/messages?after=4",
                     "conversations/:id/messages", id="query-dropped"),
        pytest.param("/api/v1/profile", "profile", id="profile"),
        pytest.param("/api/v1/accounts/3/conversations/9/toggle_status",
                     "conversations/:id/toggle_status", id="status"),
    ],
)  # fmt: skip
def test_endpoint_labels_hold_no_ids(path: str, label: str) -> None:
    """A Chatwoot call's endpoint label has no account or conversation ids: few series."""
    assert counters.endpoint(path) == label


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_histograms_from_two_processes_are_one_on_metrics(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Observations of two processes add up: cumulative buckets, count and sum on /metrics."""
    one = Counters(redis, metrics_key=topology.key("metrics"))
    two = Counters(redis, metrics_key=topology.key("metrics"))
    await one.observe(counters.WEBHOOK_STORED, [0.003, 0.02])
    await two.observe(counters.WEBHOOK_STORED, [0.004, 400.0])
    await one.chatwoot_call("POST", "/api/v1/accounts/3/conversations/9/messages", 200, 0.05)
    await two.chatwoot_call("POST", "/api/v1/accounts/1/conversations/2/messages", None, 5.0)
    text = (await Metrics(topology).render(redis, 0)).decode()
    name = counters.WEBHOOK_STORED
    buckets = {dict(k)["le"]: v for k, v in samples(text, f"{name}_bucket").items()}
    assert (buckets["0.0025"], buckets["0.005"], buckets["0.025"]) == (0, 2, 3)
    assert (buckets["300"], buckets["+Inf"]) == (3, 4)
    assert samples(text, f"{name}_count") == {(): 4}
    assert samples(text, f"{name}_sum")[()] == pytest.approx(400.027)
    calls = samples(text, f"{counters.CHATWOOT_REQUEST}_count")
    assert calls == {
        (("endpoint", "conversations/:id/messages"), ("method", "POST"), ("status", "200")): 1,
        (("endpoint", "conversations/:id/messages"), ("method", "POST"), ("status", "error")): 1,
    }


async def test_dead_letters_by_reason(redis: aioredis.Redis, topology: Topology) -> None:
    """Dead letters are counted by group and reason."""
    counted = Counters(redis, metrics_key=topology.key("metrics"))
    await counted.count(counters.DEAD_LETTERS, group="persist", reason="permanent")
    await counted.count(counters.DEAD_LETTERS, group="persist", reason="permanent")
    await counted.count(counters.DEAD_LETTERS, group="deliver", reason="max_attempts")
    text = (await Metrics(topology).render(redis, 0)).decode()
    assert samples(text, "switchboard_dead_letters_total") == {
        (("group", "persist"), ("reason", "permanent")): 2,
        (("group", "deliver"), ("reason", "max_attempts")): 1,
    }


async def test_every_family_shows_before_its_first_observation(
    redis: aioredis.Redis, topology: Topology
) -> None:
    """Each histogram and labelled counter is on /metrics (empty) from the start, so
    dashboards and alerts find it; and the names the consumers write are those it serves."""
    text = (await Metrics(topology).render(redis, 0)).decode()
    for name in HISTOGRAMS:
        assert f"# TYPE {name} histogram" in text
    for name in LABELLED_COUNTERS:
        assert f"# TYPE {name}_total counter" in text
    written = {counters.WEBHOOK_STORED, counters.TURN_EMITTED, counters.REPLY_POSTED,
               counters.CHATWOOT_REQUEST}  # fmt: skip
    assert written == set(HISTOGRAMS)
    assert {counters.DEAD_LETTERS} == set(LABELLED_COUNTERS)


async def test_a_strange_field_is_skipped(redis: aioredis.Redis, topology: Topology) -> None:
    """A field of another shape in the series hash (a hand edit) does not break the scrape."""
    key = counters.series_key(topology.key("metrics"))
    await redis.hset(key, mapping={"h|x": 1, "zz": 2, "h|switchboard_turn_emitted_seconds||abc": 1})
    response = await Metrics(topology).render(redis, 0)
    assert b"switchboard_redis_up 1.0" in response
