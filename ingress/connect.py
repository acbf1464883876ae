"""The Redis client for REDIS_URL: a single server (`redis://`, `rediss://`, `unix://`) or a
Redis Cluster (`redis+cluster://host:port`, `rediss+cluster://` for TLS), one factory for
the ingress, the consumers and the CLI."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What a Redis call raises when Redis is not usable, whichever client: a cluster client that
# cannot reach any node raises RedisClusterException, a plain Exception and not a RedisError.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, TimeoutError)
# The part of UNAVAILABLE that is surely "not reachable" (not an error reply such as OOM).
UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    TimeoutError,
)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """A client for `url`, opening no connection yet. A cluster URL names any one node: the
    client learns the others (and the slots) from it on first use.

    The cluster client is typed as `Redis`: it answers the same commands, and every key
    Switchboard touches at once (a Lua script's keys, a multi-key DEL) shares one hash tag, so
    no call needs to know which client it has."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    if scheme is None:
        return aioredis.Redis.from_url(url, **options)
    plain = urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))
    return cast(aioredis.Redis, RedisCluster.from_url(plain, **options))
