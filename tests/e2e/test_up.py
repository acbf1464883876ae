"""`switchboard up --demo` as a newcomer runs it: the demo's curl gets a reply, the other
commands find the servers from any directory with no environment set, and /metrics shows
where the time went."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import services
from tests.e2e.deployment import SWITCHBOARD

pytestmark = pytest.mark.e2e
PIPELINE = ("REDIS_URL", "DATABASE_URL", "SWITCHBOARD_STREAMS", "PORT")
HISTOGRAMS = (
    "switchboard_webhook_stored_seconds",
    "switchboard_turn_emitted_seconds",
    "switchboard_reply_posted_seconds",
    "switchboard_chatwoot_request_seconds",
)


def wait(what: str, check: Callable[[], bool], up: services.Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if up.popen.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no {what}; switchboard up said:\n{up.output()[-4000:]}")


def counts(text: str) -> dict[str, float]:
    """Each histogram's observations, summed over its labels."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_count"):
                name = sample.name.removesuffix("_count")
                found[name] = found.get(name, 0) + sample.value
    return found


def test_demo_then_commands_from_anywhere_and_latency_metrics(
    process_env: dict[str, str], tmp_path: Path
) -> None:
    """After `up --demo` and the banner's curl: the reply arrives; `streams`, `doctor` and
    `dlq list` work from another directory with no pipeline variable set; every latency
    histogram on /metrics has observations; stopping `up` removes the servers file."""
    home = tmp_path / "home"
    # `up` is given this run's servers (no embedded ones to start: quicker), as a user may.
    env = {k: v for k, v in process_env.items() if not k.startswith("CHATWOOT_")}
    env |= {"SWITCHBOARD_HOME": str(home), "PORT": str(services.free_port())}
    up = services.Process("up", [SWITCHBOARD, "up", "--demo"], env, tmp_path)
    servers_file = home / "servers.json"
    try:
        wait("servers file", servers_file.exists, up)
        assert stat.S_IMODE(servers_file.stat().st_mode) == 0o600
        recorded = json.loads(servers_file.read_text())
        fake, ingress = recorded["env"]["CHATWOOT_BASE_URL"], recorded["ingress_url"]

        said = httpx.post(f"{fake}/_fake/customer", json={"content": "Hello, Switchboard!"})
        said.raise_for_status()

        def replied() -> bool:
            messages = httpx.get(f"{fake}/_fake/messages").json()
            return any("Hello, Switchboard!" in str(m.get("content")) and
                       m.get("message_type") in ("outgoing", 1) for m in messages)  # fmt: skip

        wait("reply at the fake Chatwoot", replied, up)

        def observed() -> bool:
            seen = counts(httpx.get(f"{ingress}/metrics").text)
            return all(seen.get(name, 0) >= 1 for name in HISTOGRAMS)

        wait("observation in every latency histogram", observed, up)

        bare = {k: v for k, v in os.environ.items() if k not in PIPELINE}
        bare |= {"SWITCHBOARD_HOME": str(home)}
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        for command in (["streams"], ["doctor"], ["dlq", "list"]):
            done = subprocess.run([SWITCHBOARD, *command], env=bare, cwd=elsewhere,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            assert "using the servers `switchboard up` started" in done.stderr
    finally:
        up.popen.send_signal(signal.SIGINT)
        status = up.stop(timeout=40)
    assert status == 0, up.output()[-4000:]
    assert not servers_file.exists()
