"""End to end, worker apps: `switchboard ingress`, `switchboard consume`, the fake Chatwoot
and `scripts/echo_app.py` as real processes; turns pushed over HTTP, signed, answered inline
or through POST /outbound."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers import signing
from consumers.store import Store
from tests import chatwoot, services
from tests.e2e.deployment import SWITCHBOARD, TOKEN, Deployment, query

pytestmark = pytest.mark.e2e

SECRET = signing.new_secret(bytes(range(32)))
OUTBOUND_TOKEN = "e2e-outbound-token"


class AppDeployment(Deployment):
    """The deployment with the echo worker app in place of the echo agent."""

    def __init__(self, env: dict[str, str], workdir: Path, app_args: list[str]) -> None:
        super().__init__(env, workdir)
        self.app_port = services.free_port()
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        streams = Path(env["SWITCHBOARD_STREAMS"]).read_text()
        # The default route's turns go to the app only: a stream no agent reads.
        head, routes = streams.split("\nroutes:\n")
        routes = routes.replace("    stream: turns\n", "    stream: turns:apps\n    app: echo\n")
        routed = f"{head}\nroutes:\n{routes}"
        assert "app: echo" in routed
        path = workdir / "streams-apps.yaml"
        path.write_text(routed)
        self.env |= {
            "SWITCHBOARD_STREAMS": str(path),
            "ALLOW_HTTP_APPS": "1",
            "ALLOW_PRIVATE_APPS": "1",
            "OUTBOUND_TOKEN": OUTBOUND_TOKEN,
        }
        self.app_args = app_args

    def up(self) -> None:
        fake = self.start("fake-chatwoot", services.python(
            "scripts/fake_chatwoot.py", "--port", str(self.fake_port), "--token", TOKEN,
            "--secret", chatwoot.SECRET, "--webhook-url", f"{self.ingress}/webhooks/chatwoot",
        ))  # fmt: skip
        services.wait_http(f"{self.fake}/_fake/requests", fake)
        app = self.start("echo-app", services.python(
            "scripts/echo_app.py", "--port", str(self.app_port), "--secret", SECRET,
            "--outbound-url", f"{self.ingress}/outbound", "--outbound-token", OUTBOUND_TOKEN,
            *self.app_args,
        ))  # fmt: skip
        services.wait_http(f"{self.app_url}/_echo/requests", app)
        added = subprocess.run(
            [SWITCHBOARD, "apps", "add", "echo", f"{self.app_url}/turns", "--secret", SECRET,
             "--timeout", "2"],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        ingress = self.start("ingress", [SWITCHBOARD, "ingress"])
        services.wait_http(f"{self.ingress}/health", ingress)
        self.start("consumers", [SWITCHBOARD, "consume"])

    def app_requests(self) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = httpx.get(f"{self.app_url}/_echo/requests").json()
        return seen

    def chatwoot_posts(self) -> list[dict[str, Any]]:
        return [r for r in self.fake_requests()
                if r["method"] == "POST" and r["path"].endswith("/messages")]  # fmt: skip

    def customer_says(self) -> None:
        body = chatwoot.rails_json(chatwoot.payload("message_created__webwidget_incoming_no_email"))
        answer = httpx.post(
            f"{self.ingress}/webhooks/chatwoot", content=body, headers=chatwoot.headers(body)
        )
        assert answer.status_code == 200


def deploy(
    process_env: dict[str, str], workdir: Path, app_args: list[str]
) -> Iterator[AppDeployment]:
    deployed = AppDeployment(process_env, workdir, app_args)
    try:
        deployed.up()
        yield deployed
    finally:
        deployed.down()


@pytest.fixture
def failing_twice(
    process_env: dict[str, str], workdir: Path, redis: object, store: Store
) -> Iterator[AppDeployment]:
    _truncate(process_env)
    yield from deploy(process_env, workdir, ["--fail-first", "2"])


@pytest.fixture
def answering_late(
    process_env: dict[str, str], workdir: Path, redis: object, store: Store
) -> Iterator[AppDeployment]:
    _truncate(process_env)
    yield from deploy(process_env, workdir, ["--late", "0.5", "--hang", "30"])


def _truncate(env: dict[str, str]) -> None:
    async def run() -> None:
        store = await Store.connect(env["DATABASE_URL"], max_size=1)
        try:
            async with store.pool.acquire() as conn:
                await conn.execute("TRUNCATE worker_apps, pushes, push_attempts")
        finally:
            await store.close()

    asyncio.run(run())


def test_an_app_failing_twice_then_answering_inline_gives_one_reply(
    failing_twice: AppDeployment, process_env: dict[str, str]
) -> None:
    """500, 500, then an inline reply: exactly one message at Chatwoot, three signed pushes
    of the same turn, each attempt in the audit trail."""
    d = failing_twice
    d.customer_says()
    d.wait_for("the inline reply at the fake Chatwoot", lambda: len(d.chatwoot_posts()) >= 1)
    time.sleep(2)  # room for a duplicate to show up
    [post] = d.chatwoot_posts()
    assert post["json"]["content"] == "You said: Hi, does the Pro plan include SSO?"
    assert post["json"]["content_attributes"]["ext_ref"] == "3:1042:918301:0"
    seen = d.app_requests()
    assert [s["verified"] for s in seen] == [True, True, True]
    assert {s["turn"] for s in seen} == {"3:1042:918301"}
    db = process_env["DATABASE_URL"]
    attempts = query(db, "SELECT outcome, http_status FROM push_attempts ORDER BY id")
    assert [(a["outcome"], a["http_status"]) for a in attempts] == [
        ("retry", 500), ("retry", 500), ("answered", 200)
    ]  # fmt: skip
    [out] = query(db, "SELECT ref, status FROM outbound")
    assert out == {"ref": "3:1042:918301:0", "status": "sent"}


def test_an_app_answering_late_over_post_outbound_gives_one_reply(
    answering_late: AppDeployment, process_env: dict[str, str]
) -> None:
    """The app saves its reply and hangs past the timeout, then POSTs it to /outbound with
    the same Idempotency-Key; the retried push gets the saved reply inline: one message."""
    d = answering_late
    d.customer_says()
    d.wait_for("the reply at the fake Chatwoot", lambda: len(d.chatwoot_posts()) >= 1)
    db = process_env["DATABASE_URL"]
    answered = "SELECT 1 FROM pushes WHERE status = 'answered'"
    d.wait_for("the retried push answered", lambda: bool(query(db, answered)))
    time.sleep(2)
    assert len(d.chatwoot_posts()) == 1
    assert len(d.app_requests()) >= 2  # the hung push, then its retry
    [out] = query(db, "SELECT ref, status FROM outbound")
    assert out == {"ref": "3:1042:918301:0", "status": "sent"}


def test_the_echo_app_refuses_bad_signatures(workdir: Path, process_env: dict[str, str]) -> None:
    """A request signed with another secret, or unsigned, gets 401; a signed one 200."""
    port = services.free_port()
    args = services.python("scripts/echo_app.py", "--port", str(port), "--secret", SECRET)
    app = services.Process("echo-app-alone", args, process_env, workdir)
    try:
        url = f"http://127.0.0.1:{port}/turns"
        services.wait_http(f"http://127.0.0.1:{port}/_echo/requests", app)
        body = b'{"turn": "3:7:9", "account": 3, "conversation": 7, "messages": []}'
        now = int(time.time())
        other = signing.new_secret(bytes(range(1, 33)))
        for headers, status in (
            (signing.headers(other, "3:7:9", now, body), 401),
            ({}, 401),
            (signing.headers(SECRET, "3:7:9", now - 3600, body), 401),
            (signing.headers(SECRET, "3:7:9", now, body), 200),
        ):
            assert httpx.post(url, content=body, headers=headers).status_code == status
    finally:
        app.stop()


@pytest.fixture
def answering(
    process_env: dict[str, str], workdir: Path, redis: object, store: Store
) -> Iterator[AppDeployment]:
    _truncate(process_env)
    yield from deploy(process_env, workdir, [])


def test_two_posts_with_one_idempotency_key_give_one_chatwoot_message(
    answering: AppDeployment,
) -> None:
    """An agent's POST /outbound retried with the same Idempotency-Key: the same 202 twice,
    one message at Chatwoot."""
    d = answering
    d.customer_says()
    d.wait_for("the inline reply", lambda: len(d.chatwoot_posts()) == 1)
    reply = {"account": 3, "conversation": 1042, "content": "And one more thing."}
    headers = {"authorization": f"Bearer {OUTBOUND_TOKEN}", "idempotency-key": "agent-42:1"}
    first = httpx.post(f"{d.ingress}/outbound", json=reply, headers=headers)
    second = httpx.post(f"{d.ingress}/outbound", json=reply, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    d.wait_for("the reply at Chatwoot", lambda: len(d.chatwoot_posts()) == 2)
    time.sleep(2)
    posts = d.chatwoot_posts()
    assert len(posts) == 2
    assert posts[1]["json"]["content_attributes"]["ext_ref"] == "agent-42:1"
