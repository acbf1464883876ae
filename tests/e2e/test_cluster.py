"""End to end on a Redis Cluster: the pipeline's main flow with REDIS_URL naming a local
3-master cluster (`redis+cluster://`), started from the embedded redis-server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from consumers.embedded import free_port, redis_binary
from consumers.store import Store
from tests import chatwoot
from tests.conftest import PREFIX
from tests.e2e.deployment import SWITCHBOARD, Deployment, query
from tests.services import ROOT

pytestmark = pytest.mark.e2e
SLOTS = 16384


class LocalCluster:
    """Three redis-server processes in cluster mode, each the master of a third of the slots,
    introduced to each other with CLUSTER MEET (no replicas: the slots, not failover, matter)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.ports: list[int] = []
        while len(self.ports) < masters:
            # A node's bus listens 10,000 above its port: the port must be at most 55535.
            port = free_port()
            if port <= 55535 and port + 10000 not in self.ports and port not in self.ports:
                self.ports.append(port)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port in self.ports:
            node = self.directory / str(port)
            node.mkdir(parents=True, exist_ok=True)
            args = [str(redis_binary()), "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(node), "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                    "--logfile", str(node / "redis.log")]  # fmt: skip
            self.processes.append(subprocess.Popen(args, stdin=subprocess.DEVNULL))
        clients = [self._client(port) for port in self.ports]
        for client in clients:
            self._wait(lambda c=client: bool(c.ping()))
        share = SLOTS // len(self.ports)
        for n, client in enumerate(clients):
            last = SLOTS - 1 if n == len(clients) - 1 else (n + 1) * share - 1
            # CLUSTER ADDSLOTS, not ADDSLOTSRANGE: the embedded server is Redis 6.2.
            client.cluster("ADDSLOTS", *range(n * share, last + 1))
        for port in self.ports[1:]:
            clients[0].cluster("MEET", "127.0.0.1", port)
        for client in clients:
            self._wait(lambda c=client: c.cluster("info")["cluster_state"] == "ok")
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=2)

    @staticmethod
    def _wait(check: object, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the local Redis Cluster did not come up")


@pytest.fixture(scope="module")
def cluster(workdir: Path) -> Iterator[LocalCluster]:
    started = LocalCluster(workdir / f"cluster-{free_port()}")
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_a_customer_message_gets_one_reply_through_a_cluster(
    cluster: LocalCluster, process_env: dict[str, str], workdir: Path, store: Store
) -> None:
    """With REDIS_URL=redis+cluster://, a signed webhook becomes rows, a turn, the agent's
    reply at Chatwoot and its echo, and the streams live on more than one master."""
    db = process_env["DATABASE_URL"]
    deployment = Deployment(process_env | {"REDIS_URL": cluster.url}, workdir)
    try:
        deployment.up()
        body = chatwoot.rails_json(chatwoot.payload("message_created__webwidget_incoming_no_email"))
        answer = httpx.post(
            f"{deployment.ingress}/webhooks/chatwoot", content=body, headers=chatwoot.headers(body)
        )
        assert answer.status_code == 200 and answer.json()["entry"]

        def echoed() -> bool:
            rows = query(db, "SELECT 1 FROM messages WHERE ext_ref IS NOT NULL")
            return len(rows) == 1

        deployment.wait_for("the echo to be stored", echoed)
        posts = [r for r in deployment.fake_requests() if r["method"] == "POST"]
        assert [p["json"]["content"] for p in posts] == [
            "You said: Hi, does the Pro plan include SSO?"
        ]
        [out] = query(db, "SELECT status, attempts FROM outbound")
        assert (out["status"], out["attempts"]) == ("sent", 1)
        # The ingress's scrape (stream lengths, the metrics hash, a SCAN for breakers) and
        # the CLI read the cluster too.
        scrape = httpx.get(f"{deployment.ingress}/metrics")
        assert scrape.status_code == 200 and "switchboard_redis_up 1.0" in scrape.text
        assert f'switchboard_stream_length{{stream="{PREFIX}:events"}} 2.0' in scrape.text
        streams = subprocess.run([SWITCHBOARD, "streams"], env=deployment.env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        assert streams.returncode == 0, streams.stderr
        assert f"{PREFIX}:events" in streams.stdout
        # The streams are spread over the masters: the run crossed slots (and nodes).
        client: Any = redis.RedisCluster.from_url(f"redis://127.0.0.1:{cluster.ports[0]}")
        try:
            homes = {
                client.get_node_from_key(f"{PREFIX}:{stream}").port
                for stream in ("events", "turns", "outbound")
            }
            assert len(homes) > 1
            assert client.xlen(f"{PREFIX}:events") == 2  # the message and its echo
        finally:
            client.close()
    finally:
        codes = deployment.down()
    assert codes["ingress"] == 0 and codes["consumers"] == 0, deployment.logs()
