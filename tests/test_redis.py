"""--store redis over real sockets: two mab replicas (2 workers each) on one real
redis-server. Exact totals in Redis and in both mirrors under concurrent feedback,
event ids applied once across replicas, the mirror catching up, Redis killed and
back, a trimmed stream reloaded, bad bodies and full tables changing nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mab.store.redis_layout import N_BUCKETS, bucket_keys, bucket_of, unpack_counts
from tests.redis_support import (
    RedisCluster,
    RedisServer,
    bucket_sizes,
    post_concurrently,
    redis_server,
)
from tests.support import ServerProcess, run_server
from tests.test_feedback import BAD_BODIES

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def replica(server: RedisServer, *args: str, env: dict[str, str] | None = None) -> Any:
    """A 2-worker mab on `server`. Its writes may wait 5 s for Redis: the default
    timeout (80 ms) is for production, and this machine runs benchmarks beside the
    tests. The tests of a slow or dead Redis give their own (a later flag wins)."""
    common = ("--store", "redis", "--redis-url", server.url, "--redis-timeout", "5")
    return run_server(*common, *args, env=env)


def until(check: Callable[[], bool], attempts: int = 1_000, pause: float = 0.01) -> int:
    """Poll `check` a bounded number of times; how many polls it took."""
    for attempt in range(attempts):
        if check():
            return attempt
        time.sleep(pause)
    raise AssertionError(f"still not so after {attempts} polls")


def feedback(server: ServerProcess, events: list[dict[str, Any]]) -> Any:
    response = server.request("POST", "/feedback", {"events": events})
    assert response.status == 200, response.body
    return response.json()


def feedback_until_ok(server: ServerProcess, events: list[dict[str, Any]]) -> Any:
    """POST until a 200 (a short --redis-timeout can give 503 on a busy machine): safe
    only because every event carries an event_id, as a client's retries must."""
    assert all("event_id" in event for event in events)
    for _ in range(100):
        response = server.request("POST", "/feedback", {"events": events})
        if response.status == 200:
            return response.json()
        assert response.status == 503, response.body
        time.sleep(0.05)
    raise AssertionError("no 200 in 100 attempts")


def counts(server: ServerProcess, arm_id: str) -> tuple[float, float] | None:
    response = server.request("GET", f"/arms/{quote(arm_id, safe='')}")
    if response.status == 404:
        return None
    assert response.status == 200, response.body
    body = response.json()
    return body["successes"], body["failures"]


def in_redis(
    server: RedisServer | RedisCluster, arm_id: str, prefix: str = "mab"
) -> tuple[float, float] | None:
    """An arm's counts as Redis (or a Cluster) holds them; None if it has none."""
    client = server.client()
    try:
        raw = client.hget(bucket_keys(prefix, bucket_of(arm_id)).arms, arm_id)
    finally:
        client.close()
    if raw is None:
        return None
    s, f, _ = unpack_counts([raw])[0].tolist()
    return s, f


def metric(server: ServerProcess, name: str) -> float:
    text = server.request("GET", "/metrics").body.decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def redis_snapshot(server: RedisServer) -> dict[bytes, Any]:
    """Every key and its value, to compare before and after."""
    client = server.client()
    try:
        return {key: client.dump(key) for key in sorted(client.keys("*"))}
    finally:
        client.close()


def test_concurrent_feedback_to_two_replicas_gives_exact_totals(redis: RedisServer) -> None:
    """12 clients post 20 batches each, alternately to replica A and B, all to the same
    arms spread over many buckets: Redis and both mirrors hold the exact totals."""
    arms = [f"arm-{i}" for i in range(8)]
    assert len({bucket_of(a) for a in arms}) > 3  # several buckets per batch

    def batches(n: int) -> list[list[dict[str, Any]]]:
        return [
            [{"id": arms[(n + batch + i) % 8], "reward": 1, "count": 2} for i in range(8)]
            + [{"id": arms[n % 8], "reward": 0}]
            for batch in range(20)
        ]

    with replica(redis) as a, replica(redis) as b:
        failures = post_concurrently((a, b), 12, batches)
        assert not failures
        # Each batch: 8 events of 2 successes, one per arm; 1 failure on arm n % 8.
        expected = {arm: (12 * 20 * 2.0, 20.0 * len(range(i, 12, 8))) for i, arm in enumerate(arms)}
        for arm, want in expected.items():
            assert in_redis(redis, arm) == want
            for server in (a, b):
                until(lambda s=server, x=arm, w=want: counts(s, x) == w)


def test_an_event_id_sent_to_both_replicas_is_applied_once(redis: RedisServer) -> None:
    """The same event, retried on A and on B: applied once, a duplicate the other times."""
    event = {"id": "once", "reward": 1, "count": 3, "event_id": "evt-1"}
    with replica(redis) as a, replica(redis) as b:
        answers = [feedback(s, [event]) for s in (a, b, a, b)]
        assert answers[0] == {"applied": 1, "new_arms": 1, "duplicates": 0}
        assert all(x == {"applied": 0, "new_arms": 0, "duplicates": 1} for x in answers[1:])
        assert in_redis(redis, "once") == (3.0, 0.0)
        for server in (a, b):
            until(lambda s=server: counts(s, "once") == (3.0, 0.0))


def test_feedback_on_one_replica_reaches_the_other(redis: RedisServer) -> None:
    """Feedback through A shows on B's /arms and /predict; B's mirror counts the lag of
    what it applied (mab_mirror_lag_seconds); neither replica applies its own feedback
    except through its mirror."""
    with replica(redis) as a, replica(redis) as b:
        assert counts(b, "fresh") is None
        feedback(a, [{"id": "fresh", "reward": 1, "count": 5}])
        polls = until(lambda: counts(b, "fresh") == (5.0, 0.0))
        assert polls < 1_000
        assert b.predict({"items": ["fresh", "never"]}).json()["unknown"] == 1
        assert metric(b, "mab_mirror_lag_seconds_count") >= 1
        assert metric(b, "mab_mirror_lag_seconds_sum") >= 0
        health = b.request("GET", "/health").json()
        assert health["status"] == "ok" and health["redis"] == "ok"
        assert health["arms"] == 1 and "mirror_lag_seconds" in health


def test_a_replica_starts_from_the_state_in_redis(redis: RedisServer) -> None:
    """A replica started after feedback was given loads it at start-up (no stream
    replay needed), then follows the streams from there."""
    with replica(redis) as a:
        feedback(a, [{"id": f"early-{i}", "reward": 0.5, "count": 2} for i in range(50)])
    with replica(redis) as b:
        assert b.request("GET", "/health").json()["arms"] == 50
        assert counts(b, "early-7") == (1.0, 1.0)
        loaded = b.wait_for_log("event", "arms loaded from redis")
        assert loaded and loaded[0]["arms"] == 50
        feedback(b, [{"id": "early-7", "reward": 1}])
        until(lambda: counts(b, "early-7") == (2.0, 1.0))


def test_redis_down_then_back(redis: RedisServer) -> None:
    """Redis killed: /predict still answers from the mirror, /feedback is 503 with
    Retry-After, /health says degraded (200 by default). Redis restarted on the same
    port and directory: the mirrors catch up without a restart of mab."""
    with (
        replica(redis, "--redis-stale-after", "0.5", "--redis-timeout", "0.1") as a,
        replica(redis) as b,
    ):
        feedback_until_ok(a, [{"id": "kept", "reward": 1, "count": 2, "event_id": "k1"}])
        until(lambda: counts(b, "kept") == (2.0, 0.0))
        redis.kill()
        predicted = a.predict({"items": ["kept", "other"]})
        assert predicted.status == 200 and predicted.json()["unknown"] == 1
        refused = a.request("POST", "/feedback", {"events": [{"id": "kept", "reward": 1}]})
        assert refused.status == 503, refused.body
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.headers["retry-after"] == "1"
        until(lambda: a.request("GET", "/health").json()["status"] == "degraded")
        health = a.request("GET", "/health")
        assert health.status == 200
        assert health.json()["redis"] == "unreachable" and health.json()["arms"] == 1
        redis.start()  # same port, same directory: the AOF brings the state back
        until(lambda: a.request("GET", "/health").json()["status"] == "ok")
        feedback_until_ok(
            a,
            [
                {"id": "kept", "reward": 0, "count": 3, "event_id": "k2"},
                {"id": "after", "reward": 1, "event_id": "a1"},
            ],
        )
        for server in (a, b):
            until(lambda s=server: counts(s, "kept") == (2.0, 3.0))
            until(lambda s=server: counts(s, "after") == (1.0, 0.0))


def test_degraded_status_code_is_configurable(redis: RedisServer) -> None:
    """--redis-degraded-status 503 takes a replica out of a load balancer while Redis
    is away (with Retry-After); /predict still answers."""
    with replica(redis, "--redis-stale-after", "0.5", "--redis-degraded-status", "503") as a:
        redis.kill()
        until(lambda: a.request("GET", "/health").status == 503)
        health = a.request("GET", "/health")
        assert health.json()["status"] == "degraded" and health.headers["retry-after"] == "1"
        assert a.predict({"items": ["x"]}).status == 200


def test_slow_redis_gives_503_not_a_hang(redis: RedisServer) -> None:
    """Redis paused (CLIENT PAUSE): /feedback answers 503 store_unavailable instead of
    waiting; retried with its event id once Redis is back, it is applied once."""
    event = {"id": "slow", "reward": 1, "event_id": "slow-1"}
    with replica(redis, "--redis-timeout", "0.1") as a:
        feedback_until_ok(a, [{"id": "slow", "reward": 0, "event_id": "slow-0"}])  # connected
        control = redis.client()
        control.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        try:
            refused = a.request("POST", "/feedback", {"events": [event]}, timeout=2.5)
            assert refused.status == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "store_unavailable"
        finally:
            control.execute_command("CLIENT", "UNPAUSE")
            control.close()
        retried = feedback_until_ok(a, [event])
        assert retried["applied"] + retried["duplicates"] == 1
        until(lambda: counts(a, "slow") == (1.0, 1.0))
        assert in_redis(redis, "slow") == (1.0, 1.0)


def test_a_trimmed_stream_makes_the_mirror_reload(tmp_path: Path) -> None:
    """B's tailer is stopped while A writes far more entries than the streams keep: on
    resuming, B finds entries missing, reloads those buckets in full, and its totals
    are exact."""
    server = RedisServer(tmp_path, extra=("--stream-node-max-entries", "2"))
    server.start()
    try:
        with replica(server, "--redis-stream-maxlen", "2") as a, replica(server) as b:
            feedback(b, [{"id": "t-0", "reward": 1}])
            until(lambda: counts(b, "t-0") == (1.0, 0.0))
            tailer = next(
                e["pid"]
                for e in b.log_events()
                if e.get("event") == "worker started" and e.get("worker") == 0
            )
            same_bucket = next(
                f"filler-{i}" for i in range(1000) if bucket_of(f"filler-{i}") == bucket_of("early")
            )
            os.kill(tailer, signal.SIGSTOP)
            try:
                # B's pending read gets the first entry of early's bucket; the second,
                # trimmed away by the writes to the same bucket after it, only a
                # reload brings to B.
                feedback(a, [{"id": "early", "reward": 0, "count": 3}])
                feedback(a, [{"id": "early", "reward": 0, "count": 4}])
                for _ in range(10):
                    feedback(a, [{"id": same_bucket, "reward": 1}])
                for batch in range(40):
                    feedback(a, [{"id": f"t-{i}", "reward": 1} for i in range(batch % 5 + 1)])
            finally:
                os.kill(tailer, signal.SIGCONT)
            # t-i got one event in each batch with batch % 5 + 1 > i, plus t-0's first.
            want = {f"t-{i}": float(sum(1 for n in range(40) if n % 5 + 1 > i)) for i in range(5)}
            want["t-0"] += 1
            for arm, successes in want.items():
                assert in_redis(server, arm) == (successes, 0.0)
                until(lambda x=arm, w=successes: counts(b, x) == (w, 0.0))
                until(lambda x=arm, w=successes: counts(a, x) == (w, 0.0))
            assert in_redis(server, "early") == (0.0, 7.0)
            until(lambda: counts(b, "early") == (0.0, 7.0))
            assert metric(b, "mab_mirror_reloads_total") >= 1
            assert b.request("GET", "/health").json()["mirror_reloads"] >= 1
    finally:
        server.stop()


def test_bad_feedback_changes_nothing_in_redis(redis: RedisServer) -> None:
    """Every malformed batch is refused whole (400 / 413), before Redis is written."""
    with replica(redis, "--max-events", "10") as a:
        feedback(a, [{"id": "item_0000001", "reward": 1, "event_id": "seen"}])
        before = redis_snapshot(redis)
        for body, status, code in BAD_BODIES:
            response = a.request("POST", "/feedback", body, JSON)
            assert (response.status, response.json()["error"]["code"]) == (status, code), body
        assert redis_snapshot(redis) == before


def test_new_arms_past_max_arms_are_refused_before_redis(redis: RedisServer) -> None:
    """A batch whose new arms would overfill the mirror is 507 and writes nothing;
    existing arms still take feedback."""
    with replica(redis, "--max-arms", "3") as a:
        feedback(a, [{"id": "m-1", "reward": 1}, {"id": "m-2", "reward": 1}])
        until(lambda: a.request("GET", "/health").json()["arms"] == 2)
        before = redis_snapshot(redis)
        full = a.request(
            "POST",
            "/feedback",
            {"events": [{"id": "m-3", "reward": 1}, {"id": "m-4", "reward": 1}]},
        )
        assert full.status == 507 and full.json()["error"]["code"] == "arm_table_full"
        assert redis_snapshot(redis) == before
        feedback(a, [{"id": "m-1", "reward": 0}, {"id": "m-3", "reward": 1}])


def test_decay_in_redis_matches_the_table(redis: RedisServer, tmp_path: Path) -> None:
    """With --half-life, Redis decays as the table does: 1 success, one half-life later
    another 1 success and 1 failure gives (1.5, 1) in Redis and in both mirrors."""
    clock = tmp_path / "clock"
    clock.write_text("1000000.0")
    env = {"MAB_FAKE_CLOCK": str(clock)}
    with (
        replica(redis, "--half-life", "60", env=env) as a,
        replica(redis, "--half-life", "60", env=env) as b,
    ):
        feedback(a, [{"id": "d", "reward": 1}])
        clock.write_text("1000060.0")
        feedback(b, [{"id": "d", "reward": 1}, {"id": "d", "reward": 0}])
        assert in_redis(redis, "d") == (1.5, 1.0)
        for server in (a, b):
            until(lambda s=server: counts(s, "d") == (1.5, 1.0))
        clock.write_text("1000120.0")
        assert counts(a, "d") == (0.75, 0.5)


def test_a_replica_with_another_half_life_refuses_to_start(redis: RedisServer) -> None:
    """Redis remembers the half-life its counts decay with: a replica with another one
    stops at start-up with a message saying so."""
    with replica(redis, "--half-life", "60"):
        pass
    with pytest.raises(AssertionError, match="half-life"):
        with replica(redis, "--half-life", "30"):
            pass


def test_buckets_spread_ids(redis: RedisServer) -> None:
    """Ids spread over every bucket (the key layout in mab/store/redis_layout.py)."""
    with replica(redis) as a:
        feedback(a, [{"id": f"spread-{i}", "reward": 1} for i in range(200)])
    sizes = bucket_sizes(redis)
    assert sum(sizes) == 200 and min(sizes) > 0


def load_catalog(server: RedisServer, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mab", "load-catalog", "--redis-url", server.url, *args, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_load_catalog_bulk_loads_into_running_and_new_replicas(
    redis: RedisServer, tmp_path: Path
) -> None:
    """`mab load-catalog` sets 20,000 arms with a progress line; a replica already
    running sees them through its mirror, one started later loads them."""
    path = tmp_path / "arms.csv"
    rows = [f"arm-{i:05d},{i % 7},{i % 11}" for i in range(20_000)]
    path.write_text("arm_id,successes,failures\n" + "\n".join(rows) + "\n")
    with replica(redis) as a:
        feedback(a, [{"id": "arm-00003", "reward": 1, "count": 100}])  # replaced by the load
        done = load_catalog(redis, path)
        assert done.returncode == 0, done.stderr
        assert "loading arms: 20,000/20,000 (100%)" in done.stderr
        assert "loaded 20,000 arms" in done.stdout
        until(lambda: a.request("GET", "/health").json()["arms"] == 20_000)
        for i in (0, 3, 12_345, 19_999):
            assert counts(a, f"arm-{i:05d}") == (i % 7, i % 11)
        feedback(a, [{"id": "arm-00003", "reward": 1}])
        until(lambda: counts(a, "arm-00003") == (4.0, 3.0))
    sizes = bucket_sizes(redis)
    assert sum(sizes) == 20_000 and min(sizes) > 0
    with replica(redis) as b:
        assert b.request("GET", "/health").json()["arms"] == 20_000
        assert counts(b, "arm-00003") == (4.0, 3.0)
        assert counts(b, "arm-12345") == (12_345 % 7, 12_345 % 11)


def test_load_catalog_refuses_a_bad_file(redis: RedisServer, tmp_path: Path) -> None:
    """A malformed CSV stops the load with exit code 2, naming the line, before
    anything is written."""
    path = tmp_path / "bad.csv"
    path.write_text("arm_id,successes,failures\na,1,2\nb,-1,2\n")
    done = load_catalog(redis, path)
    assert done.returncode == 2
    assert "bad.csv:3: successes must be a finite count >= 0" in done.stderr
    client = redis.client()
    try:
        assert client.hlen(bucket_keys("mab", bucket_of("a")).arms) == 0
    finally:
        client.close()


def test_event_ids_past_the_dedupe_capacity_are_forgotten_oldest_first(
    redis: RedisServer,
) -> None:
    """--dedupe-capacity bounds the event ids Redis keeps (split over the buckets, 1
    each here): past it the oldest is forgotten, and a retry of it applies again."""
    with replica(redis, "--dedupe-capacity", str(N_BUCKETS)) as a:
        for event_id in ("first", "second"):
            assert feedback(a, [{"id": "cap", "reward": 1, "event_id": event_id}])["applied"] == 1
        assert feedback(a, [{"id": "cap", "reward": 1, "event_id": "second"}])["duplicates"] == 1
        assert feedback(a, [{"id": "cap", "reward": 1, "event_id": "first"}])["applied"] == 1
        assert in_redis(redis, "cap") == (3.0, 0.0)


def test_a_replaced_tailer_resumes_from_the_shared_positions(redis: RedisServer) -> None:
    """Worker 0 (the tailer) killed: its replacement follows the streams from the
    positions in shared memory, neither missing nor reloading anything."""
    with replica(redis) as a, replica(redis) as b:
        feedback(a, [{"id": "r", "reward": 1}])
        until(lambda: counts(b, "r") == (1.0, 0.0))
        tailer = next(
            e["pid"]
            for e in b.log_events()
            if e.get("event") == "worker started" and e["worker"] == 0
        )
        os.kill(tailer, signal.SIGKILL)
        feedback(a, [{"id": "r", "reward": 0, "count": 2}])  # while no tailer runs, maybe
        until(lambda: any(e.get("event") == "worker restarted" for e in b.log_events()))
        feedback(a, [{"id": "r2", "reward": 1}])
        until(lambda: counts(b, "r") == (1.0, 2.0))
        until(lambda: counts(b, "r2") == (1.0, 0.0))
        assert b.request("GET", "/health").json()["mirror_reloads"] == 0


def test_the_twin_pipeline_mirrors_too(redis: RedisServer) -> None:
    """MAB_NO_NATIVE=1: the mirror sets counts through the pure twin's table as well."""
    twin = {"MAB_NO_NATIVE": "1"}
    with replica(redis, env=twin) as a, replica(redis) as b:
        feedback(b, [{"id": "tw", "reward": 0.5, "count": 4}])
        until(lambda: counts(a, "tw") == (2.0, 2.0))
        feedback(a, [{"id": "tw", "reward": 1}])
        until(lambda: counts(b, "tw") == (3.0, 2.0))


def test_redis_store_flags_are_checked() -> None:
    """--store redis needs --redis-url, and takes neither --catalog nor --state-dir."""
    from mab.cli import build_parser, config_from_args
    from mab.errors import StartupError

    def parse(*argv: str) -> Any:
        return config_from_args(build_parser(environ={}).parse_args(["serve", *argv]))

    assert parse("--store", "redis", "--redis-url", "redis://h:1/0").redis.url == "redis://h:1/0"
    for extra, message in (
        ((), "needs --redis-url"),
        (("--redis-url", "redis://h:1/0", "--catalog", "a.csv"), "load-catalog"),
        (("--redis-url", "redis://h:1/0", "--state-dir", "d"), "drop --state-dir"),
        (("--redis-url", "redis://h:1/0", "--redis-degraded-status", "42"), "200 to 599"),
    ):
        with pytest.raises(StartupError, match=message):
            parse("--store", "redis", *extra)


def test_a_foreign_stream_entry_makes_the_mirror_reload_not_stall(redis: RedisServer) -> None:
    """An entry mab did not write, in a bucket's stream: the tailer reloads that bucket
    and follows on, instead of stopping there."""
    with replica(redis) as a:
        client = redis.client()
        try:
            client.xadd(bucket_keys("mab", bucket_of("bog")).events, {"hello": "world"})
        finally:
            client.close()
        feedback(a, [{"id": "bog", "reward": 1}])
        until(lambda: counts(a, "bog") == (1.0, 0.0))
        feedback(a, [{"id": "bog", "reward": 1}])
        until(lambda: counts(a, "bog") == (2.0, 0.0))
        assert a.request("GET", "/health").json()["mirror_reloads"] >= 1


def test_wait_aof_needs_redis_7_2(redis: RedisServer) -> None:
    """Debian's Redis 7.0 has no WAITAOF: --redis-wait-aof stops start-up, saying why."""
    with pytest.raises(AssertionError, match=r"Redis or Valkey 7\.2"):
        with replica(redis, "--redis-wait-aof", "0"):
            pass


def test_redis_store_answers_as_documented(redis: RedisServer) -> None:
    """/health (ok, then degraded) and /feedback (200, then 503 store_unavailable with
    Retry-After) of the redis store match mab/openapi.json."""
    from tests.test_openapi import check

    with replica(redis, "--redis-stale-after", "0.5", "--redis-timeout", "0.1") as a:
        check("/health", "GET", a.request("GET", "/health"))
        event = {"events": [{"id": "doc", "reward": 1}]}
        check("/feedback", "POST", a.request("POST", "/feedback", event))
        redis.kill()
        refused = a.request("POST", "/feedback", event)
        assert refused.status == 503
        check("/feedback", "POST", refused)
        until(lambda: a.request("GET", "/health").json()["status"] == "degraded")
        check("/health", "GET", a.request("GET", "/health"))


def test_prefixes_keep_bandits_apart(redis: RedisServer) -> None:
    """Two bandits on one Redis under different --redis-prefix: each sees only its own
    arms and event ids."""
    with replica(redis, "--redis-prefix", "left") as left, replica(redis) as right:
        event = {"id": "shared-id", "reward": 1, "event_id": "same-event"}
        assert feedback(left, [event])["applied"] == 1
        assert feedback(right, [event])["applied"] == 1  # not a duplicate: another bandit
        feedback(right, [{"id": "right-only", "reward": 0}])
        until(lambda: counts(right, "right-only") == (0.0, 1.0))
        until(lambda: counts(left, "shared-id") == (1.0, 0.0))
        assert counts(left, "right-only") is None
        assert left.request("GET", "/health").json()["arms"] == 1
    assert in_redis(redis, "shared-id", prefix="left") == (1.0, 0.0)
    assert in_redis(redis, "right-only", prefix="left") is None
    assert in_redis(redis, "right-only") == (0.0, 1.0)
