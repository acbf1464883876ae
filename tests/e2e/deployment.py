"""A deployment of the real processes for end-to-end tests: the fake Chatwoot,
`switchboard ingress`, `switchboard consume` and the echo agent, as a user starts them."""

from __future__ import annotations

import asyncio
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
