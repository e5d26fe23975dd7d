"""Redis clients of the redis store: one place that knows single node from Cluster.

Every client is made where it is used, after the fork (a connection pool inherited
across fork() is shared by two processes). The parent's load and `mab load-catalog`
use the synchronous client; workers the asyncio one. Retries are off: a /feedback
must answer within its timeout, and the mirror retries on its own schedule.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.backoff
import redis.cluster
import redis.retry

from mab.config import RedisConfig

# redis-py's clients have no common base class: Redis and RedisCluster differ in
# their pipelines' types. The store only calls commands both have.
AsyncClient = Any
SyncClient = Any

# Errors that mean "Redis is unreachable, slow or refusing": the store's 503s and
# the mirror's reconnects.
UNAVAILABLE: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)


def async_client(config: RedisConfig, socket_timeout: float | None) -> AsyncClient:
    assert config.url is not None, "checked by the CLI"
    no_retry = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": config.timeout * 2,
        "retry": no_retry,
    }
    if config.cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(config.url, **common)
    return redis.asyncio.Redis.from_url(config.url, **common)


def sync_client(config: RedisConfig, socket_timeout: float = 30.0) -> SyncClient:
    assert config.url is not None, "checked by the CLI"
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    }
    if config.cluster:
        return redis.cluster.RedisCluster.from_url(config.url, **common)
    return redis.Redis.from_url(config.url, **common)
