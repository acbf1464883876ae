"""Instagram comments end to end, through the real processes: the fake Meta (Graph API and
worker app sink), `switchboard ingress`, `switchboard consume persist forward`, and the
`switchboard apps` / `meta` / `replay` / `dlq` commands as an operator runs them."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from consumers import signing
from consumers.store import Store
from tests import chatwoot, meta, services
from tests.e2e.deployment import SWITCHBOARD, query

APP = "shop"
APP_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OWNER = "17841400000000001"
OTHER_OWNER = "17841400000000002"
MEDIA = "17900000000000001"
OTHER_MEDIA = "17900000000000002"
FORWARDS = "SELECT comment_key, owner_id, app, outcome, detail FROM meta_forwards"


class MetaWorld:
    """The processes of one test, and what an operator and Meta do to them."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.fake_port = services.free_port()
        self.fake = f"http://127.0.0.1:{self.fake_port}"
        ingress_port = services.free_port()
        self.ingress = f"http://127.0.0.1:{ingress_port}"
        streams = workdir / "streams-meta.yaml"
        # Retried sooner than the default 10 s, so a Graph failure costs the test little.
        text = Path(env["SWITCHBOARD_STREAMS"]).read_text()
        streams.write_text(text.replace("claim_idle_ms: 10000", "claim_idle_ms: 1500"))
        self.env = env | {
            "SWITCHBOARD_STREAMS": str(streams),
            "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET,
            "PORT": str(ingress_port),
            "META_APP_SECRET": meta.APP_SECRET,
            "META_VERIFY_TOKEN": meta.VERIFY_TOKEN,
            "META_ACCESS_TOKEN": meta.ACCESS_TOKEN,
            "META_GRAPH_URL": self.fake,
            "ALLOW_HTTP_APPS": "1",
            "ALLOW_PRIVATE_APPS": "1",
        }
        self.workdir = workdir
        self.processes: list[services.Process] = []

    def up(self) -> None:
        fake = self._start(
            "fake-meta",
            services.python(
                "scripts/fake_meta.py", "serve", "--port", str(self.fake_port),
                "--token", meta.ACCESS_TOKEN, "--media", f'{{"{MEDIA}": "{OWNER}"}}',
            ),
        )  # fmt: skip
        services.wait_http(f"{self.fake}/_fake/requests", fake)
        ingress = self._start("ingress", [SWITCHBOARD, "ingress"])
        services.wait_http(f"{self.ingress}/health", ingress)
        self.switchboard("apps", "add", APP, f"{self.fake}/apps/{APP}", "--secret", APP_SECRET)
        self.switchboard("meta", "map", OWNER, APP)
        self._start("consumers", [SWITCHBOARD, "consume", "persist", "forward"])

    def down(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def _start(self, name: str, args: list[str]) -> services.Process:
        process = services.Process(name, args, self.env, self.workdir)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.processes)

    def switchboard(self, *args: str) -> str:
        done = subprocess.run(
            [SWITCHBOARD, *args], env=self.env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"switchboard {args}: {done.stderr}"
        return done.stdout

    def send(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.ingress}/webhooks/meta", content=body, headers=headers or meta.headers(body)
        )

    def fake_post(self, path: str, data: dict[str, Any]) -> None:
        httpx.post(f"{self.fake}/_fake/{path}", json=data).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = httpx.get(f"{self.fake}/_fake/requests").json()
        return answer

    def app_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r.get("app") == APP]

    def wait_for(self, what: str, check: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}\n{self.logs()}")


@pytest.fixture
def world(
    process_env: dict[str, str], workdir: Path, redis: object, store: Store
) -> Iterator[MetaWorld]:
    deployed = MetaWorld(process_env, workdir)
    try:
        deployed.up()
        yield deployed
    finally:
        deployed.down()


def forwards(env: dict[str, str]) -> list[dict[str, Any]]:
    return query(env["DATABASE_URL"], FORWARDS)


def assert_signed_for_the_app(request: dict[str, Any]) -> None:
    """What the app received verifies with its own secret, the Standard Webhooks way."""
    headers = request["headers"]
    expected = signing.sign(
        APP_SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]),
        request["body"].encode(),
    )  # fmt: skip
    assert headers["webhook-signature"] == expected


def test_a_comment_reaches_its_app_once_through_a_graph_failure_and_a_resend(
    world: MetaWorld,
) -> None:
    """A signed comment whose owner lookup fails once (Graph 500), sent twice by Meta,
    reaches the app mapped to its owner exactly once, as the original bytes, signed with the
    app's secret; its outcome is `forwarded`."""
    world.fake_post("faults", {"rules": [{"path": f"/{MEDIA}", "status": 500, "times": 1}]})
    body = meta.comment(MEDIA, "18000000000000011")
    first, again = world.send(body), world.send(body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["duplicate"] is True
    world.wait_for("the forward", lambda: len(world.app_requests()) >= 1)
    graph = [r for r in world.requests() if r["path"].endswith(MEDIA)]
    assert len(graph) == 2 and all(r["authorized"] for r in graph)  # failed once, then asked
    # The same comment sent again in another batch (Meta's own retry may re-batch).
    later = meta.webhook(meta.change(MEDIA, "18000000000000011"), at=1_763_800_099)
    assert later != body and world.send(later).json()["duplicate"] is False
    time.sleep(3)  # past the retry interval: a second forward would have happened by now
    [request] = world.app_requests()
    assert request["body"].encode() == body
    assert_signed_for_the_app(request)
    assert forwards(world.env) == [
        {
            "comment_key": "comments:18000000000000011",
            "owner_id": OWNER,
            "app": APP,
            "outcome": "forwarded",
            "detail": None,
        }
    ]


def test_bad_signature_is_401_and_nothing_is_written(world: MetaWorld) -> None:
    """A comment signed with another secret is refused with 401 and never reaches a stream,
    the audit trail or an app."""
    body = meta.comment(MEDIA, "18000000000000012")
    response = world.send(body, meta.headers(body, "not-the-app-secret"))
    assert response.status_code == 401
    client = sync_redis.Redis.from_url(world.env["REDIS_URL"])
    try:
        key = Path(world.env["SWITCHBOARD_STREAMS"]).read_text().split("prefix: ")[1].split()[0]
        assert client.xlen(f"{key}:events") == 0
    finally:
        client.close()
    assert query(world.env["DATABASE_URL"], "SELECT * FROM webhook_events") == []
    assert world.app_requests() == []


def test_challenge_is_answered_only_for_the_verify_token(world: MetaWorld) -> None:
    """Meta's subscription check gets its challenge back with our token, 403 otherwise."""
    url = f"{world.ingress}/webhooks/meta"
    ok = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": meta.VERIFY_TOKEN,
                                "hub.challenge": "987654"})  # fmt: skip
    wrong = httpx.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "guess",
                                   "hub.challenge": "987654"})  # fmt: skip
    assert (ok.status_code, ok.text) == (200, "987654")
    assert wrong.status_code == 403


def test_an_unmapped_owner_is_ignored_then_mapped_and_replayed_once(world: MetaWorld) -> None:
    """A comment on media of an owner mapped to no app is recorded `ignored` with the owner
    id; once mapped, `switchboard replay` sends it to the app, and a second replay does not
    send it again."""
    world.fake_post("media", {"media": {OTHER_MEDIA: OTHER_OWNER}})
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    body = meta.comment(OTHER_MEDIA, "18000000000000013")
    assert world.send(body).status_code == 200
    world.wait_for("the ignored comment", lambda: len(forwards(world.env)) == 1)
    [ignored] = forwards(world.env)
    assert (ignored["outcome"], ignored["owner_id"]) == ("ignored", OTHER_OWNER)
    assert OTHER_OWNER in ignored["detail"]
    assert world.app_requests() == []
    world.switchboard("meta", "map", OTHER_OWNER, APP)
    for _ in range(2):
        world.switchboard("replay", "--since", since, "--event", "meta.instagram")
        world.wait_for("the replayed forward", lambda: len(world.app_requests()) == 1)
    time.sleep(2)
    [request] = world.app_requests()
    assert request["body"].encode() == body
    [row] = forwards(world.env)
    assert (row["outcome"], row["app"]) == ("forwarded", APP)


def test_a_graph_refusal_is_dead_lettered_then_replayed_from_the_dead_letters(
    world: MetaWorld,
) -> None:
    """An unknown media (Graph code 100) dead-letters the webhook naming the code; once Graph
    knows it, `switchboard dlq replay --all` forwards it once."""
    body = meta.comment("17900000000000099", "18000000000000014")
    assert world.send(body).status_code == 200
    world.wait_for("the dead comment", lambda: [r["outcome"] for r in forwards(world.env)]
                   == ["dead"])  # fmt: skip
    [dead] = forwards(world.env)
    assert "Graph error code 100" in dead["detail"]
    listed = world.switchboard("dlq", "list")
    assert "Graph error code 100" in listed and "forward" in listed
    world.fake_post("media", {"media": {"17900000000000099": OWNER}})
    world.switchboard("dlq", "replay", "--all")
    world.wait_for("the replayed forward", lambda: len(world.app_requests()) == 1)
    time.sleep(2)
    assert len(world.app_requests()) == 1
    assert [r["outcome"] for r in forwards(world.env)] == ["forwarded"]
