"""The parent's load of the whole arm state from Redis into a new mirror table.

Per bucket, in this order: the sequence number and last entry of its stream (where
the tailer starts), then its hash, in pipelined HSCANs over all buckets at once.
An arm that changes during the load is also in the stream after that position, so
the tailer brings it up to date (setting counts twice is harmless).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import redis.exceptions
import structlog

from mab.config import LearningConfig, RedisConfig
from mab.errors import StartupError
from mab.state.mirror import SCAN_COUNT, MirrorState, head_of
from mab.state.table import ArmTable
from mab.store.redis_client import UNAVAILABLE, SyncClient, sync_client
from mab.store.redis_layout import LAYOUT_VERSION, N_BUCKETS, bucket_keys, meta_key, unpack_counts

_log = structlog.get_logger("mab.store.redis")
_PROGRESS_S = 1.0


def ensure_layout(client: SyncClient, prefix: str, half_life: float | None) -> float:
    """Record how the keys of `prefix` are laid out (and the half-life the counts decay
    with) if they are new, or check they match this mab; returns the half-life."""
    key = meta_key(prefix)
    client.hsetnx(key, "version", LAYOUT_VERSION)
    client.hsetnx(key, "buckets", N_BUCKETS)
    if half_life is not None:
        client.hsetnx(key, "half_life", repr(half_life))
    found = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    if int(found["version"]) != LAYOUT_VERSION or int(found["buckets"]) != N_BUCKETS:
        raise StartupError(
            f"redis prefix {prefix!r} holds layout version {found['version']} with "
            f"{found['buckets']} buckets; this mab uses {LAYOUT_VERSION} with {N_BUCKETS}"
        )
    return float(found.get("half_life", half_life or 0.0))


def resolve_mode(config: RedisConfig) -> RedisConfig:
    """`config`, in Cluster mode when its URL names a Cluster node (INFO cluster), so
    --redis-cluster is optional: a plain client would only get MOVED errors there."""
    if config.cluster:
        return config
    client = sync_client(config)
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except UNAVAILABLE as exc:
        raise StartupError(f"cannot reach redis: {exc!r}") from None
    finally:
        client.close()
    if not enabled:
        return config
    if config.wait_aof is not None:
        raise StartupError("--redis-wait-aof works with a single Redis, not yet a Cluster")
    _log.info("the redis URL names a Cluster node: Cluster mode")
    return replace(config, cluster=True)


def check_wait_aof(client: SyncClient, replicas: int | None) -> None:
    """--redis-wait-aof needs WAITAOF (Redis or Valkey 7.2+) and the AOF on."""
    if replicas is None:
        return
    try:
        client.execute_command("WAITAOF", 1, 0, 1)
    except redis.exceptions.ResponseError as exc:
        raise StartupError(
            f"--redis-wait-aof: {exc} (it needs Redis or Valkey 7.2+ with appendonly yes)"
        ) from None


def check_meta(client: SyncClient, prefix: str, half_life: float) -> None:
    """The layout matches, and Redis' counts decay with this server's --half-life."""
    stored = ensure_layout(client, prefix, half_life)
    if stored != half_life:
        raise StartupError(
            f"redis prefix {prefix!r} decays with --half-life {stored:g}; every replica "
            f"must use the same (this one has {half_life:g})"
        )


def _heads(client: SyncClient, prefix: str) -> list[tuple[bytes, int]]:
    pipe = client.pipeline(transaction=False)
    for bucket in range(N_BUCKETS):
        keys = bucket_keys(prefix, bucket)
        pipe.get(keys.seq)
        pipe.xrevrange(keys.events, count=1)
    replies = pipe.execute()
    return [head_of(replies[2 * b], replies[2 * b + 1]) for b in range(N_BUCKETS)]


def _scan_all(client: SyncClient, prefix: str) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    cursors: dict[int, int] = dict.fromkeys(range(N_BUCKETS), 0)
    started = reported = time.monotonic()
    while cursors:
        pipe = client.pipeline(transaction=False)
        order = list(cursors)
        for bucket in order:
            pipe.hscan(bucket_keys(prefix, bucket).arms, cursors[bucket], count=SCAN_COUNT)
        for bucket, (cursor, page) in zip(order, pipe.execute(), strict=True):
            found.update(page)
            if cursor == 0:
                del cursors[bucket]
            else:
                cursors[bucket] = cursor
        if time.monotonic() - reported >= _PROGRESS_S:
            reported = time.monotonic()
            _log.info(
                "loading arms from redis",
                arms=len(found),
                buckets_done=N_BUCKETS - len(cursors),
                seconds=round(reported - started, 1),
            )
    return found


def load_mirror(
    redis_config: RedisConfig, learning: LearningConfig, state: MirrorState, now: float
) -> ArmTable:
    """The table of every arm in Redis, decayed to `now`; `state` gets the positions."""
    client = sync_client(redis_config)
    started = time.perf_counter()
    try:
        check_wait_aof(client, redis_config.wait_aof)
        check_meta(client, redis_config.prefix, learning.half_life)
        heads = _heads(client, redis_config.prefix)
        found = _scan_all(client, redis_config.prefix)
    except UNAVAILABLE as exc:
        raise StartupError(f"cannot load the arm state from redis: {exc!r}") from None
    finally:
        client.close()
    for bucket, (position, seq) in enumerate(heads):
        state.set_position(bucket, position, seq)
        state.contact(bucket, True, time.time())
    ids = [raw.decode() for raw in found]
    values = unpack_counts(list(found.values()))
    counts = values[:, :2]
    if learning.half_life > 0:  # the table's t0 is now: counts decayed to now
        counts = counts * np.exp2((values[:, 2] - now) / learning.half_life)[:, None]
    table = ArmTable(
        ids,
        np.ascontiguousarray(counts),
        max_arms=max(learning.max_arms, len(ids)),
        dedupe_capacity=1,  # Redis dedupes: the table's ring is not used
        half_life=learning.half_life,
        t0=now,
        updated=np.ascontiguousarray(values[:, 2]),
    )
    _log.info(
        "arms loaded from redis",
        arms=len(ids),
        buckets=N_BUCKETS,
        seconds=round(time.perf_counter() - started, 3),
    )
    return table
