"""The chaos suite, short: each scenario of scripts/chaos.py for a few seconds of load. The
script fails unless nothing answered 2xx was lost and nothing was stored or replied twice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.services import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "scenario",
    [
        "kill-consumers",
        "restart-redis",
        "restart-postgres",
        "chatwoot-faults",
        "ingress-down",
        "postgres-failover",
        "chatwoot-list-failures",
        "app-faults",
    ],
)
def test_chaos_scenario(scenario: str) -> None:
    """Under load and faults: lost 0, duplicates 0, every conversation answered (and with
    ingress-down, every customer message stored, the lost webhooks through the backfill)."""
    seconds = "10" if scenario == "kill-consumers" else "7"
    run = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--scenario", scenario, "--seconds", seconds,
         "--rate", "10", "--conversations", "8", "--settle", "90"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "RESULT: ok" in run.stdout
