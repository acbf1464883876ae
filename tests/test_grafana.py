"""docs/grafana-dashboard.json: ready to import, and every metric it queries is one /metrics
serves."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from ingress.topology import Topology
from tests.ingress.test_app import Client, client_for, make_settings

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bswitchboard_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


@pytest.fixture
async def client(topology: Topology, redis: aioredis.Redis) -> AsyncIterator[Client]:
    async for c in client_for(make_settings(), topology, redis):
        yield c


def queried() -> set[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs, "the dashboard queries nothing"
    return {m for e in exprs for m in METRIC.findall(e)}


def test_the_dashboard_is_importable_json() -> None:
    """It parses, has a title and uid, and each panel a datasource and at least one query."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Webhooks by outcome", "Stream lag", "Pending", "Dead letters",
                   "Webhook received → stored", "Reply queued → posted"):  # fmt: skip
        assert any(t.startswith(wanted) for t in titles), wanted
    assert all(p["targets"] and p["datasource"] for p in dashboard["panels"])


async def test_every_metric_it_queries_is_on_metrics(client: Client) -> None:
    """Each series the panels query is declared on /metrics (a renamed metric breaks this)."""
    text = (await client.get("/metrics")).text
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    for name in sorted(queried()):
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert name in declared or base in declared, f"{name} is not on /metrics"
