"""The worker apps' JSON API of the ops app, in-process over real PostgreSQL: the same checks
as `switchboard apps`, secrets never listed, actions behind the bearer token."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from consumers.opsapp.app import create_app
from consumers.store import Store
from ingress.settings import Secret, Settings
from ingress.topology import Topology

TOKEN = "ops-test-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def ops(
    redis_url: str, database_url: str, topology: Topology, store: Store
) -> AsyncIterator[httpx.AsyncClient]:
    async with store.transaction() as tx:
        await tx.conn.execute("TRUNCATE worker_apps")
    settings = Settings(redis_url=redis_url, database_url=database_url,
                        ops_token=Secret(TOKEN), allow_http_apps=True)  # fmt: skip
    app = create_app(settings, topology, clock=lambda: dt.datetime.now(dt.UTC), form_key=b"k" * 32)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ops.test") as client:
            yield client


async def test_add_list_update_remove(ops: httpx.AsyncClient) -> None:
    """An app's whole life over the API; the list masks the secret."""
    body = {"name": "bot", "url": "http://93.184.215.14/turns", "secret": SECRET}
    added = await ops.post("/api/apps", json=body, headers=BEARER)
    assert added.status_code == 201 and added.json() == {"name": "bot"}
    [listed] = (await ops.get("/api/apps", headers=BEARER)).json()
    assert listed["name"] == "bot" and listed["enabled"] is True
    assert SECRET not in str(listed) and listed["secret"].startswith("whsec_")
    again = await ops.post("/api/apps", json=body, headers=BEARER)
    assert again.status_code == 409
    changed = await ops.patch("/api/apps/bot", json={"enabled": False}, headers=BEARER)
    assert changed.status_code == 200
    assert (await ops.get("/api/apps", headers=BEARER)).json()[0]["enabled"] is False
    assert (await ops.delete("/api/apps/bot", headers=BEARER)).json()["removed"] is True
    assert (await ops.delete("/api/apps/bot", headers=BEARER)).status_code == 404
    assert (await ops.get("/api/apps", headers=BEARER)).json() == []


async def test_a_generated_secret_is_answered_once(ops: httpx.AsyncClient) -> None:
    """No secret given: one is generated and given in the answer that made it, never again."""
    added = await ops.post(
        "/api/apps", json={"name": "gen", "url": "http://93.184.215.14/t"}, headers=BEARER
    )
    secret = added.json()["secret"]
    assert secret.startswith("whsec_")
    assert secret not in (await ops.get("/api/apps", headers=BEARER)).text
    rotated = await ops.patch("/api/apps/gen", json={"new_secret": True}, headers=BEARER)
    assert rotated.json()["secret"] not in (secret, None)


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        pytest.param({"name": "Bad Name", "url": "http://93.184.215.14/"}, "name", id="name"),
        pytest.param({"name": "a", "url": "http://127.0.0.1:9/"}, "url", id="loopback"),
        pytest.param({"name": "a", "url": "http://10.0.0.5/"}, "url", id="private"),
        pytest.param({"name": "a", "url": "ftp://93.184.215.14/"}, "url", id="scheme"),
        pytest.param(
            {"name": "a", "url": "http://93.184.215.14/", "secret": "nope"}, "secret", id="secret"
        ),
        pytest.param(
            {"name": "a", "url": "http://93.184.215.14/", "timeout_s": 0}, "timeout_s", id="timeout"
        ),
        pytest.param({"name": "a"}, "url", id="missing"),
        pytest.param({"name": "a", "url": "http://93.184.215.14/", "x": 1}, "x", id="unknown"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    ops: httpx.AsyncClient, body: dict[str, object], parameter: str
) -> None:
    """A URL is user input (SSRF): private and loopback addresses are refused as by the CLI."""
    answer = await ops.post("/api/apps", json=body, headers=BEARER)
    assert answer.status_code == 422, answer.text
    assert answer.json()["parameter"] == parameter
    assert (await ops.get("/api/apps", headers=BEARER)).json() == []


async def test_actions_need_the_token(ops: httpx.AsyncClient) -> None:
    body = {"name": "bot", "url": "http://93.184.215.14/turns"}
    assert (await ops.post("/api/apps", json=body)).status_code == 401
    assert (await ops.get("/api/apps")).status_code == 401
    assert (await ops.delete("/api/apps/bot")).status_code == 401
