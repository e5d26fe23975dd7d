"""--store redis on a real 3-master Redis Cluster (no replicas) started by the test:
the buckets' hash tags spread the arms over every master, each script stays in one
slot, and two replicas agree on exact totals, event ids and a bulk load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mab.store.redis_layout import N_BUCKETS, bucket_keys, bucket_of
from tests.redis_support import RedisCluster, post_concurrently, redis_cluster
from tests.support import run_server
from tests.test_redis import counts, feedback, feedback_until_ok, in_redis, load_catalog, until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with redis_cluster(tmp_path) as running:
        yield running


def replica(cluster: RedisCluster, *args: str) -> Any:
    common = ("--store", "redis", "--redis-cluster", "--redis-url", cluster.url)
    return run_server(*common, "--redis-timeout", "5", *args)


def test_buckets_cover_every_master(cluster: RedisCluster) -> None:
    """The 16 buckets' hash tags map to slots on each of the 3 masters."""
    client = cluster.client()
    try:
        owners = {
            client.get_node_from_key(bucket_keys("mab", b).arms).name for b in range(N_BUCKETS)
        }
        masters = {node.name for node in client.get_primaries()}
    finally:
        client.close()
    assert owners == masters and len(masters) == 3


def test_two_replicas_on_a_cluster_give_exact_totals(cluster: RedisCluster) -> None:
    """Concurrent feedback through two replicas, ids in every bucket (so on every
    master): exact totals in the Cluster and in both mirrors; an event id sent to both
    is applied once."""
    arms = [f"c-{i}" for i in range(48)]
    assert {bucket_of(a) for a in arms} == set(range(N_BUCKETS))

    def batches(n: int) -> list[list[dict[str, Any]]]:
        events = [{"id": arm, "reward": 1} for arm in arms]
        return [[*events, {"id": arms[n], "reward": 0, "count": 2}] for _ in range(10)]

    with replica(cluster) as a, replica(cluster) as b:
        failures = post_concurrently((a, b), 6, batches)
        assert not failures
        for i, arm in enumerate(arms):
            want = (60.0, 20.0 if i < 6 else 0.0)
            assert in_redis(cluster, arm) == want
            for server in (a, b):
                until(lambda s=server, x=arm, w=want: counts(s, x) == w)
        event = {"id": "c-once", "reward": 1, "event_id": "c-evt"}
        answers = [feedback(s, [event]) for s in (a, b)]
        assert [x["applied"] for x in answers] == [1, 0]
        assert [x["duplicates"] for x in answers] == [0, 1]
        for server in (a, b):
            until(lambda s=server: counts(s, "c-once") == (1.0, 0.0))


def test_load_catalog_into_a_cluster(cluster: RedisCluster, tmp_path: Path) -> None:
    """`mab load-catalog` spreads a CSV over the masters (Cluster mode detected); a
    replica loads it at start-up."""
    path = tmp_path / "arms.csv"
    path.write_text(
        "arm_id,successes,failures\n" + "".join(f"k{i},{i % 3},1\n" for i in range(5_000))
    )
    done = load_catalog(cluster.nodes[0], path)  # Cluster mode detected
    assert done.returncode == 0, done.stderr
    with replica(cluster) as a:
        assert a.request("GET", "/health").json()["arms"] == 5_000
        assert counts(a, "k4") == (1.0, 1.0)


def test_a_cluster_is_detected_without_the_flag(cluster: RedisCluster) -> None:
    """Pointed at a Cluster node without --redis-cluster, mab finds out (INFO cluster)
    and runs in Cluster mode; --redis-wait-aof, not yet for a Cluster, stops it."""
    common = ("--store", "redis", "--redis-url", cluster.url, "--redis-timeout", "5")
    with run_server(*common) as a:
        assert a.wait_for_log("event", "the redis URL names a Cluster node: Cluster mode")
        feedback(a, [{"id": f"d-{i}", "reward": 1} for i in range(48)])
        until(lambda: counts(a, "d-47") == (1.0, 0.0))
    assert in_redis(cluster, "d-47") == (1.0, 0.0)
    with pytest.raises(AssertionError, match="not yet a Cluster"):
        with run_server(*common, "--redis-wait-aof", "0"):
            pass


def test_a_master_down_then_back(tmp_path: Path) -> None:
    """One of the 3 masters killed: /predict answers from the mirror, /feedback that
    touches its buckets is 503, /health says degraded; restarted on its port and
    directory, the Cluster heals and both mirrors catch up without a restart of mab."""
    with redis_cluster(tmp_path, extra=("--cluster-node-timeout", "1000")) as cluster:
        args = ("--redis-stale-after", "0.5", "--redis-timeout", "0.5")
        with replica(cluster, *args) as a, replica(cluster) as b:
            arms = [f"m-{i}" for i in range(48)]
            feedback_until_ok(a, [{"id": x, "reward": 1, "event_id": f"before-{x}"} for x in arms])
            until(lambda: counts(b, "m-47") == (1.0, 0.0))
            victim = cluster.nodes[1]
            victim.kill()
            assert a.predict({"items": arms}).status == 200
            refused = a.request(
                "POST", "/feedback", {"events": [{"id": x, "reward": 1} for x in arms]}
            )
            assert refused.status == 503 and refused.headers["retry-after"] == "1"
            until(lambda: a.request("GET", "/health").json()["status"] == "degraded")
            victim.start()
            until(lambda: a.request("GET", "/health").json()["status"] == "ok", attempts=3000)
            events = [{"id": x, "reward": 0, "event_id": f"after-{x}"} for x in arms]
            until(
                lambda: a.request("POST", "/feedback", {"events": events}).status == 200,
                attempts=3000,
            )
            for server in (a, b):
                for arm in (arms[0], arms[47]):
                    until(lambda s=server, x=arm: counts(s, x)[1] == 1.0)
