"""Bad input at the ingress (hypothesis): never a 5xx, never a wrong entry, valid ones stored."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import hypothesis.strategies as st
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings

from ingress.app import create_app
from ingress.settings import Settings
from ingress.signatures import sign_chatwoot
from ingress.topology import Topology
from tests import chatwoot

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def nested_in_an_object(depth: int) -> bytes:
    return b'{"event":"message_created","x":' + b"[" * depth + b"]" * depth + b"}"


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: chatwoot.rails_json(v)),
    st.dictionaries(
        st.sampled_from(["event", "id", "account", "conversation", "account_id", "messages"]),
        json_values,
    ).map(chatwoot.rails_json),
    st.integers(1, 200_000).map(lambda n: b"[" * n),  # deep nesting
    st.integers(1, 40_000).map(nested_in_an_object),
    st.just(b"\xef\xbb\xbf{}"),  # a byte-order mark
)
# Header values as raw bytes: ASCII, and any other character as UTF-8 (Starlette reads latin-1).
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, exclude_categories=("Cc", "Cs")), max_size=80
).map(lambda text: text.encode("utf-8"))


@pytest.fixture
async def client(topology: Topology, redis: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env(
        {"CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET, "MAX_BODY_BYTES": "100000"}
    )
    app = create_app(settings, topology, redis=redis)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
            yield c


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    sign=st.sampled_from(["valid", "garbage", "none", "old"]),
    delivery=header_values,
    signature=header_values,
    timestamp=header_values,
)
async def test_no_bad_input_gets_a_5xx(
    body: bytes,
    sign: str,
    delivery: bytes,
    signature: bytes,
    timestamp: bytes,
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    topology: Topology,
) -> None:
    """Any body and any headers get 200, 400, 401 or 413; only 200s add an entry."""
    headers: dict[str, Any] = {"x-chatwoot-delivery": delivery, "content-type": "text/plain"}
    now = str(int(time.time()))
    if sign == "valid":
        headers |= {"x-chatwoot-timestamp": now,
                    "x-chatwoot-signature": sign_chatwoot(body, chatwoot.SECRET, now)}  # fmt: skip
    elif sign == "garbage":
        headers |= {"x-chatwoot-timestamp": timestamp, "x-chatwoot-signature": signature}
    elif sign == "old":
        stamp = str(int(time.time()) - 3600)
        signed = sign_chatwoot(body, chatwoot.SECRET, stamp)
        headers |= {"x-chatwoot-timestamp": stamp, "x-chatwoot-signature": signed}
    before = int(await redis.xlen(topology.key("events")))
    response = await client.post("/webhooks/chatwoot", content=body, headers=headers)
    assert response.status_code in (200, 400, 401, 413)
    assert "error" in response.json() or response.status_code == 200
    added = int(await redis.xlen(topology.key("events"))) - before
    if response.status_code != 200 or response.json()["duplicate"]:
        assert added == 0
    else:
        assert sign == "valid" and added == 1
