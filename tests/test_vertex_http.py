"""The Vertex stores behind the real server: `/predict` and `/health` unchanged, over
real sockets, with the fake Vertex AI server running on a thread of the test process
(so a test can change its faults while the server talks to it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mab.fake_vertex import FakeVertex, Faults
from tests.support import eventually_sync, free_port, run_server
from tests.vertex_support import ARMS, KINDS, KNOWN, store_args, write_catalog

ITEMS = [*KNOWN[:380], *(f"new_{i}" for i in range(20))]  # 4 chunks, 20 unknown


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("vertex") / "arms.csv")


@pytest.fixture
def fake() -> Iterator[FakeVertex]:
    with FakeVertex(ARMS).in_thread() as running:
        yield running


@pytest.fixture(scope="module")
def embedded_bodies(catalog: Path) -> dict[int, bytes]:
    """Reference answers: the embedded store on the same catalog, by seed."""
    with run_server("--catalog", str(catalog), workers=1) as server:
        return {seed: server.predict({"items": ITEMS, "seed": seed}).body for seed in (1, 2)}


@pytest.mark.parametrize("kind", KINDS)
def test_predict_answers_as_the_embedded_store(
    kind: str, fake: FakeVertex, embedded_bodies: dict[int, bytes]
) -> None:
    """Seeded /predict through a Vertex store returns byte for byte what the embedded
    store returns for the same catalog: same counts, same unknown ids counted."""
    with run_server(*store_args(kind, fake.address), workers=1) as server:
        for seed, body in embedded_bodies.items():
            response = server.predict({"items": ITEMS, "seed": seed})
            assert response.status == 200
            assert response.json()["unknown"] == 20
            assert response.body == body
        health = server.request("GET", "/health").json()
        assert health["status"] == "ok" and health["store"] == f"vertex-{kind.split('-')[0]}"
    assert fake.stats.max_ids <= 100


def test_failures_timeouts_health_and_recovery(fake: FakeVertex) -> None:
    """Over HTTP: one failed chunk gives 502 with the upstream status at once while the
    other chunks are delayed past the deadline; a broken stream gives 502; the deadline gives
    504; /health turns 503 after --unhealthy-after failures and 200 after a success,
    also when the store was down and comes back."""
    args = [*store_args("featurestore", fake.address), "--unhealthy-after", "3"]
    with run_server(*args, "--fetch-deadline", "0.3", workers=1) as server:
        assert server.predict({"items": ITEMS}).status == 200  # connected

        fake.faults = Faults(
            fail_ids={ITEMS[300]: grpc.StatusCode.UNAVAILABLE},
            delay_ids=dict.fromkeys(ITEMS[:300], 30.0),  # past --fetch-deadline: 504 if awaited
        )
        fake.reset_stats()
        response = server.predict({"items": ITEMS})
        assert response.status == 502, response.body
        assert response.json()["error"]["code"] == "store_failed"
        assert "UNAVAILABLE: injected failure" in response.json()["error"]["message"]
        # The 502 did not wait for the delayed chunks: they were cancelled, not answered.
        eventually_sync(lambda: fake.stats.active == 0)
        assert fake.stats.ok == 0 and fake.stats.cancelled >= 1
        assert server.request("GET", "/health").status == 200  # 1 failure of 3

        fake.faults = Faults(break_after=5)
        response = server.predict({"items": ITEMS})
        assert response.status == 502 and "stream broken" in response.body.decode()

        fake.faults = Faults(delay=30.0)  # far past --fetch-deadline
        response = server.predict({"items": ITEMS})
        assert response.status == 504 and response.json()["error"]["code"] == "store_timeout"

        health = server.request("GET", "/health")
        assert health.status == 503
        assert "3 fetches in a row" in health.json()["reason"]

        fake.faults = Faults()
        assert server.predict({"items": ITEMS}).status == 200
        assert server.request("GET", "/health").status == 200

        fake.call_in_thread(fake.stop)  # the store goes away...
        outcomes = [server.predict({"items": ITEMS}) for _ in range(3)]
        assert [r.status for r in outcomes] == [502] * 3
        assert "UNAVAILABLE" in outcomes[0].json()["error"]["message"]
        assert server.request("GET", "/health").status == 503

        fake.call_in_thread(fake.start)  # ...and comes back on the same port
        deadline = time.monotonic() + 5
        while server.predict({"items": ITEMS}).status != 200:
            assert time.monotonic() < deadline, "no recovery in 5 s"
            time.sleep(0.05)
        assert server.request("GET", "/health").status == 200


def test_cache_answers_repeat_items_without_calls(fake: FakeVertex) -> None:
    """With --cache-ttl, a repeated request makes no calls, and scores the same."""
    args = [*store_args("featurestore", fake.address), "--cache-ttl", "60"]
    with run_server(*args, workers=1) as server:
        first = server.predict({"items": ITEMS, "seed": 5})
        calls = fake.stats.calls.total()
        second = server.predict({"items": ITEMS, "seed": 5})
        assert fake.stats.calls.total() == calls
        assert second.body == first.body and second.json()["unknown"] == 20
        cache = server.request("GET", "/health").json()["cache"]
        assert cache["hits"] == len(ITEMS) and cache["entries"] == len(ITEMS)


def test_bad_vertex_config_stops_startup(fake: FakeVertex) -> None:
    """A malformed resource name, or no credentials without --vertex-insecure, stop
    `mab serve` with exit 2 and a message, before any worker starts."""

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mab", "serve", "--port", str(free_port()), *args]
        env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

    result = serve("--store", "vertex-featurestore", "--vertex-entity-type", "arms")
    assert result.returncode == 2 and "--vertex-entity-type must look like" in result.stderr
    args = [a for a in store_args("featurestore", fake.address) if a != "--vertex-insecure"]
    result = serve(*args)
    assert result.returncode == 2 and "Application Default Credentials" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_read_only_store_refuses_feedback_and_arm_reads(fake: FakeVertex) -> None:
    """/feedback and /arms on a Vertex store give the documented JSON error naming the
    store, and /predict still answers."""
    with run_server(*store_args("featurestore", fake.address), workers=1) as server:
        body = b'{"events": [{"id": "item_0000001", "reward": 1}]}'
        response = server.request("POST", "/feedback", body, {"Content-Type": "application/json"})
        assert response.status == 405, response.body
        error = response.json()["error"]
        assert error["code"] == "not_supported_by_store"
        assert "vertex-featurestore" in error["message"] and "read-only" in error["message"]
        arm = server.request("GET", "/arms/item_0000001")
        assert arm.status == 405 and arm.json()["error"]["code"] == "not_supported_by_store"
        assert server.predict({"items": ITEMS}).status == 200
