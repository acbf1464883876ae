"""End to end: `switchboard ingress`, `switchboard consume`, the echo agent and the fake
Chatwoot as real processes, talking over HTTP and Redis as a user's deployment does."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.store import Store
from tests import chatwoot, services
from tests.conftest import PREFIX

pytestmark = pytest.mark.e2e

TOKEN = "e2e-bot-token"
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


class Deployment:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.ingress_port = services.free_port()
        self.fake_port = services.free_port()
        self.ingress = f"http://127.0.0.1:{self.ingress_port}"
        self.fake = f"http://127.0.0.1:{self.fake_port}"
        self.env = env | {
            "CHATWOOT_BASE_URL": self.fake,
            "CHATWOOT_API_TOKEN": TOKEN,
            "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET,
            "CHATWOOT_BOT_ID": "4",
            "PORT": str(self.ingress_port),
        }
        self.workdir = workdir
        self.processes: dict[str, services.Process] = {}

    def start(self, name: str, args: list[str]) -> services.Process:
        process = services.Process(name, args, self.env, self.workdir)
        self.processes[name] = process
        return process

    def up(self) -> None:
        fake = self.start(
            "fake-chatwoot",
            services.python(
                "scripts/fake_chatwoot.py",
                "--port",
                str(self.fake_port),
                "--token",
                TOKEN,
                "--secret",
                chatwoot.SECRET,
                "--webhook-url",
                f"{self.ingress}/webhooks/chatwoot",
            ),
        )
        services.wait_http(f"{self.fake}/_fake/requests", fake)
        ingress = self.start("ingress", [SWITCHBOARD, "ingress"])
        services.wait_http(f"{self.ingress}/health", ingress)
        self.start("consumers", [SWITCHBOARD, "consume"])
        self.start("echo-agent", services.python("scripts/echo_agent.py", "--prefix", PREFIX))

    def down(self) -> dict[str, int]:
        return {name: p.stop() for name, p in reversed(self.processes.items())}

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.output()[-3000:]}" for n, p in self.processes.items())

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}\n{self.logs()}")

    def fake_requests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = httpx.get(f"{self.fake}/_fake/requests").json()
        return answer


@pytest.fixture
def deployment(
    process_env: dict[str, str], workdir: Path, redis: object, store: Store
) -> Iterator[Deployment]:
    deployed = Deployment(process_env, workdir)
    try:
        deployed.up()
        yield deployed
    finally:
        deployed.down()


def query(store_url: str, sql: str) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        store = await Store.connect(store_url, max_size=1)
        try:
            async with store.pool.acquire() as conn:
                return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await store.close()

    return asyncio.run(run())


def test_a_customer_message_gets_one_reply(
    deployment: Deployment, process_env: dict[str, str]
) -> None:
    """A signed webhook becomes rows, a turn, the agent's reply at Chatwoot, and its echo."""
    db = process_env["DATABASE_URL"]
    body = chatwoot.rails_json(chatwoot.payload("message_created__webwidget_incoming_no_email"))
    answer = httpx.post(
        f"{deployment.ingress}/webhooks/chatwoot", content=body, headers=chatwoot.headers(body)
    )
    assert answer.status_code == 200

    def replied() -> bool:
        return any(r["method"] == "POST" for r in deployment.fake_requests())

    deployment.wait_for("the reply at the fake Chatwoot", replied)
    [post] = [r for r in deployment.fake_requests() if r["method"] == "POST"]
    assert post["path"] == "/api/v1/accounts/3/conversations/1042/messages"
    assert post["json"]["content"] == "You said: Hi, does the Pro plan include SSO?"
    ref = post["json"]["content_attributes"]["ext_ref"]
    assert ref == "echo-3:1042:918301"

    # The fake posts the echo webhook back; persist matches it to our outbound row.
    def echoed() -> bool:
        rows = query(db, "SELECT 1 FROM messages WHERE ext_ref IS NOT NULL")
        return len(rows) == 1

    deployment.wait_for("the echo to be stored", echoed)
    [out] = query(db, "SELECT ref, status, attempts, chatwoot_message_id FROM outbound")
    assert out["ref"] == ref and out["status"] == "sent" and out["attempts"] == 1
    assert out["chatwoot_message_id"] is not None
    messages = query(db, "SELECT direction, sender_kind, ext_ref FROM messages ORDER BY direction")
    assert messages == [
        {"direction": "inbound", "sender_kind": "contact", "ext_ref": None},
        {"direction": "outbound", "sender_kind": "agent_bot", "ext_ref": ref},
    ]
    [conv] = query(db, "SELECT handler, status, emitted_through FROM conversations")
    assert conv["handler"] == "bot" and conv["emitted_through"] == 918301
    # Our own echo produced no turn and no second reply.
    time.sleep(1)
    assert len([r for r in deployment.fake_requests() if r["method"] == "POST"]) == 1


def test_processes_stop_cleanly_on_sigterm(deployment: Deployment) -> None:
    """SIGTERM stops ingress and consumers with status 0 within the bound."""
    consumers = deployment.processes["consumers"]
    deployment.wait_for("consumers to start", lambda: "consumers.started" in consumers.output())
    started = time.monotonic()
    codes = {
        name: deployment.processes[name].stop(signal.SIGTERM, timeout=15)
        for name in ("consumers", "ingress")
    }
    assert codes == {"consumers": 0, "ingress": 0}, deployment.logs()
    assert time.monotonic() - started < 15
    assert "consumers.stopped" in consumers.output()
