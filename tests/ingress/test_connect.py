"""REDIS_URL names a single server or a Redis Cluster; the factory makes the matching client."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ingress.connect import is_cluster, redis_client
from ingress.errors import ConfigError
from ingress.settings import Settings


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        pytest.param("redis://127.0.0.1:6379/0", False, id="redis"),
        pytest.param("rediss://cache.example.com:6380/0", False, id="rediss"),
        pytest.param("unix:///run/redis.sock", False, id="unix"),
        pytest.param("redis+cluster://127.0.0.1:7000", True, id="cluster"),
        pytest.param("rediss+cluster://user:pw@cache.example.com:7000", True, id="cluster-tls"),
    ],
)
async def test_the_url_scheme_chooses_the_client(url: str, cluster: bool) -> None:
    """Settings accept every scheme; `+cluster` makes a RedisCluster, the rest a Redis."""
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    client = redis_client(url)
    try:
        assert is_cluster(url) is cluster
        assert isinstance(client, RedisCluster if cluster else aioredis.Redis)
    finally:
        await client.aclose()


async def test_a_cluster_url_keeps_tls_and_credentials() -> None:
    """`rediss+cluster://user:pw@host` connects to the nodes over TLS with the credentials."""
    client = redis_client("rediss+cluster://user:pw@cache.example.com:7000")
    try:
        assert isinstance(client, RedisCluster)
        kwargs = client.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("user", "pw")
        assert kwargs["connection_class"].__name__ == "SSLConnection"
    finally:
        await client.aclose()


def test_other_schemes_are_refused_without_echoing_the_url() -> None:
    """A typo'd scheme is a config error naming the schemes, not the password."""
    with pytest.raises(ConfigError) as failure:
        Settings.from_env({"REDIS_URL": "redis-cluster://u:hunter2@h:1"})
    assert "hunter2" not in str(failure.value.problems)
    assert "redis+cluster://" in failure.value.problems[0]
