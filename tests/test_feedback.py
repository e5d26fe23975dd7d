"""/feedback and /arms over real sockets, 2 workers: exact counts under concurrency,
all-or-nothing batches, idempotent event ids, durability through kill -9, decay on an
injected clock, the arm limit, and learning seen by every worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support import BACKENDS, HOST, ServerProcess, eventually_sync, run_server

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Each test runs against the native pipeline and against its twin."""
    env: dict[str, str] = BACKENDS[request.param]
    return env


def feedback(server: ServerProcess, events: list[dict[str, Any]]) -> Any:
    response = server.request("POST", "/feedback", {"events": events})
    assert response.status == 200, response.body
    return response.json()


def arm(server: ServerProcess, arm_id: str) -> Any:
    response = server.request("GET", f"/arms/{quote(arm_id, safe='')}")
    assert response.status == 200, response.body
    return response.json()


def test_feedback_updates_an_arm_and_arms_shows_it(backend: dict[str, str]) -> None:
    """Rewards add reward*count to successes and the rest to failures; an unknown id
    becomes a new arm from the prior; /arms reports counts, mean and interval with
    the prior included."""
    with run_server("--demo-arms", "100", env=backend) as server:
        before = arm(server, "item_0000007")
        answer = feedback(
            server,
            [
                {"id": "item_0000007", "reward": 1},
                {"id": "item_0000007", "reward": 0.25, "count": 4},
                {"id": "brand new", "reward": 0, "count": 3},
            ],
        )
        assert answer == {"applied": 3, "new_arms": 1, "duplicates": 0}
        after = arm(server, "item_0000007")
        assert after["successes"] == before["successes"] + 2
        assert after["failures"] == before["failures"] + 3
        fresh = arm(server, "brand new")
        assert (fresh["successes"], fresh["failures"]) == (0.0, 3.0)
        assert fresh["mean"] == pytest.approx(1 / 5)  # Beta(1 + 0, 1 + 3)
        low, high = fresh["ci95"]
        assert 0 < low < fresh["mean"] < high < 1
        assert fresh["updated_at"].endswith("Z")
        missing = server.request("GET", "/arms/no%20such")
        assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
        predicted = server.predict({"items": ["brand new", "never seen"]}).json()
        assert predicted["unknown"] == 1  # the new arm is known now


def test_concurrent_feedback_gives_exact_totals(backend: dict[str, str]) -> None:
    """16 clients on their own connections post 25 batches each, over both workers, all
    to the same few arms: the totals are exact, nothing lost to a race."""
    arms = ["item_0000001", "item_0000002", "new_a", "new_b"]

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            for batch in range(25):
                events = [
                    {"id": arms[(n + batch + i) % 4], "reward": 1, "count": 2} for i in range(4)
                ]
                events.append({"id": arms[n % 4], "reward": 0})
                conn.request("POST", "/feedback", json.dumps({"events": events}), JSON)
                response = conn.getresponse()
                response.read()
                assert response.status == 200
        finally:
            conn.close()

    with run_server("--demo-arms", "100", env=backend) as server:
        before = {a: arm(server, a) if a.startswith("item") else None for a in arms}
        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        pids = {e["pid"] for e in server.log_events() if e.get("event") == "worker started"}
        assert len(pids) == 2
        # Each batch: 4 events of 2 successes spread over the 4 arms, 1 failure on arm n % 4.
        for name in arms:
            counts = arm(server, name)
            base = before[name] or {"successes": 0.0, "failures": 0.0}
            assert counts["successes"] - base["successes"] == 16 * 25 * 2
            assert counts["failures"] - base["failures"] == 4 * 25  # 4 of the 16 clients


BAD_BODIES: list[tuple[bytes, int, str]] = [
    (b"{", 400, "invalid_json"),
    (b"[]", 400, "bad_request"),
    (b'{"events": []}', 400, "bad_request"),
    (b'{"events": "x"}', 400, "bad_request"),
    (b'{"events": [{"id": "a", "reward": 1}], "extra": 1}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1}, {"reward": 1}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1}, {"id": "x"}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1.5}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": -0.1}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": "1"}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": true}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1, "count": 0}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1, "count": 1.5}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1, "event_id": 5}]}', 400, "bad_request"),
    (b'{"events": [{"id": "item_0000001", "reward": 1, "colour": "red"}]}', 400, "bad_request"),
    (b'{"events": [{"id": 7, "reward": 1}]}', 400, "bad_request"),
    (b'{"events": [{"id": "", "reward": 1}]}', 400, "bad_request"),
    (json.dumps({"events": [{"id": "a", "reward": 1}] * 11}).encode(), 413, "too_many_events"),
]


def test_bad_bodies_change_nothing(backend: dict[str, str]) -> None:
    """Every malformed batch is refused whole with a JSON error naming the problem (the
    event's index for a bad event), and no count moves, not even the good events'."""
    with run_server("--demo-arms", "100", "--max-events", "10", env=backend) as server:
        before = arm(server, "item_0000001")
        for body, status, code in BAD_BODIES:
            response = server.request("POST", "/feedback", body, JSON)
            assert response.status == status, (body, response.body)
            assert response.json()["error"]["code"] == code
            if body.startswith(b'{"events": [{"id": "item_0000001", "reward": 1}, {'):
                assert "events[1]" in response.json()["error"]["message"]
        assert arm(server, "item_0000001") == before
        assert server.request("GET", "/arms/x").status == 404  # no arm was added
        assert server.request("GET", "/arms/a").status == 404
        wrong_type = server.request("POST", "/feedback", b"{}", {"Content-Type": "text/plain"})
        assert wrong_type.status == 415


def test_event_ids_apply_once_also_across_a_restart(
    tmp_path: Path, backend: dict[str, str]
) -> None:
    """An event_id sent twice (in one batch, or retried later on any worker) counts
    once; the duplicates are reported; after a restart from --state-dir it is still
    known."""
    args = ("--demo-arms", "100", "--state-dir", str(tmp_path))
    with run_server(*args, env=backend) as server:
        first = feedback(
            server,
            [
                {"id": "item_0000003", "reward": 1, "event_id": "e-1"},
                {"id": "item_0000003", "reward": 1, "event_id": "e-1"},
                {"id": "item_0000003", "reward": 1, "event_id": "e-2"},
            ],
        )
        assert first == {"applied": 2, "new_arms": 0, "duplicates": 1}
        for _ in range(4):  # new connections: both workers see the retry
            again = feedback(server, [{"id": "item_0000003", "reward": 1, "event_id": "e-2"}])
            assert again == {"applied": 0, "new_arms": 0, "duplicates": 1}
        counts = arm(server, "item_0000003")
    with run_server(*args, env=backend) as restarted:
        assert arm(restarted, "item_0000003")["successes"] == counts["successes"]
        retry = feedback(restarted, [{"id": "item_0000003", "reward": 1, "event_id": "e-1"}])
        assert retry["duplicates"] == 1
        assert arm(restarted, "item_0000003")["successes"] == counts["successes"]


def test_acknowledged_feedback_survives_kill_9(tmp_path: Path, backend: dict[str, str]) -> None:
    """Batches acknowledged before the whole server (parent and workers) is killed with
    SIGKILL are all there after a restart, none twice; so are the new arms."""
    args = ("--demo-arms", "100", "--state-dir", str(tmp_path))
    acked = 0
    with run_server(*args, env=backend) as server:
        for n in range(40):
            feedback(
                server, [{"id": f"k9-{n % 5}", "reward": 1}, {"id": "item_0000009", "reward": 0}]
            )
            acked += 1
        workers = server.workers()
        for pid in [server.proc.pid, *workers]:
            os.kill(pid, signal.SIGKILL)
        server.proc.wait(10)
        eventually_sync(lambda: not any(_alive(pid) for pid in workers))
    with run_server(*args, env=backend) as restarted:
        assert sum(arm(restarted, f"k9-{i}")["successes"] for i in range(5)) == acked
        base = restarted.request("GET", "/arms/item_0000009").json()
        with run_server("--demo-arms", "100", env=backend) as fresh:
            assert base["failures"] == arm(fresh, "item_0000009")["failures"] + acked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("zombie") < 0


@pytest.fixture
def fake_clock(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "clock"
    path.write_text("1000000.0")
    yield path


def test_decay_halves_evidence_after_one_half_life(
    fake_clock: Path, backend: dict[str, str]
) -> None:
    """With --half-life 60 on an injected clock, an arm's evidence (the catalog's and
    feedback's alike) is half as much 60 s later; the prior does not fade."""
    env = {**backend, "MAB_FAKE_CLOCK": str(fake_clock)}
    with run_server("--demo-arms", "100", "--half-life", "60", env=env) as server:
        before = arm(server, "item_0000004")
        feedback(server, [{"id": "item_0000004", "reward": 1, "count": 10}])
        fed = arm(server, "item_0000004")
        assert fed["successes"] == pytest.approx(before["successes"] + 10)
        fake_clock.write_text("1000060.0")
        later = arm(server, "item_0000004")
        assert later["successes"] == pytest.approx(fed["successes"] / 2)
        assert later["failures"] == pytest.approx(fed["failures"] / 2)
        fake_clock.write_text(str(1000060.0 + 60 * 2000))  # 2,000 half-lives: all gone
        gone = arm(server, "item_0000004")
        assert gone["successes"] == 0.0 and gone["mean"] == 0.5  # the prior, Beta(1, 1)


def test_decayed_counts_are_the_same_after_a_restart(tmp_path: Path, fake_clock: Path) -> None:
    """At the same clock, the counts after a restart (snapshot and journal replayed) equal
    those before it, to the bit."""
    env = {"MAB_FAKE_CLOCK": str(fake_clock)}
    args = ("--demo-arms", "100", "--half-life", "30", "--state-dir", str(tmp_path))
    with run_server(*args, env=env) as server:
        for n in range(5):
            fake_clock.write_text(str(1000000.0 + 7 * n))
            feedback(server, [{"id": "item_0000002", "reward": 0.3, "count": 3}])
        before = arm(server, "item_0000002")
    with run_server(*args, env=env) as restarted:
        assert arm(restarted, "item_0000002") == before


def test_max_arms_refuses_new_ids_with_507(backend: dict[str, str]) -> None:
    """With --max-arms at the catalog's size plus 2, a batch with a third new id is refused
    whole (507 arm_table_full, nothing applied); existing arms still take feedback."""
    with run_server("--demo-arms", "100", "--max-arms", "102", env=backend) as server:
        feedback(server, [{"id": "n1", "reward": 1}, {"id": "n2", "reward": 1}])
        before = arm(server, "item_0000005")
        full = server.request(
            "POST",
            "/feedback",
            {"events": [{"id": "item_0000005", "reward": 1}, {"id": "n3", "reward": 1}]},
        )
        assert full.status == 507 and full.json()["error"]["code"] == "arm_table_full"
        assert arm(server, "item_0000005") == before
        assert server.request("GET", "/arms/n3").status == 404
        assert feedback(server, [{"id": "item_0000005", "reward": 1}])["applied"] == 1
        assert feedback(server, [{"id": "n1", "reward": 1}])["applied"] == 1


def _worker_of(response_headers: dict[str, str]) -> str:
    return response_headers["x-request-id"].split("-")[0]  # the worker's pid, in hex


def test_a_reward_on_one_worker_changes_the_next_predict_on_the_other(
    backend: dict[str, str],
) -> None:
    """Feedback acknowledged by worker A: the very next /predict answered by worker B
    ranks that arm first (it is 1,000 successes up)."""
    with run_server("--demo-arms", "100", env=backend) as server:
        items = {"items": ["item_0000010", "item_0000011", "item_0000012"], "top_k": 1}
        assert server.predict(items).status == 200
        acked = server.request(
            "POST", "/feedback", {"events": [{"id": "item_0000012", "reward": 1, "count": 100000}]}
        )
        assert acked.status == 200
        writer = _worker_of(acked.headers)
        deadline = time.monotonic() + 10
        while True:  # new connections until the other worker answers
            answer = server.predict(items)
            if _worker_of(answer.headers) != writer:
                break
            assert time.monotonic() < deadline, "the other worker never answered"
        assert answer.json()["items"][0]["id"] == "item_0000012"


def test_feedback_metrics_and_the_memory_only_warning(backend: dict[str, str]) -> None:
    """Without --state-dir start-up warns that feedback lives in memory only; /metrics
    counts applied events, duplicates, new arms and the arms in the table."""
    with run_server("--demo-arms", "100", env=backend) as server:
        warnings = [e for e in server.log_events() if "memory only" in e.get("event", "")]
        assert warnings and warnings[0]["level"] == "warning"
        feedback(
            server,
            [
                {"id": "m1", "reward": 1, "event_id": "x"},
                {"id": "m1", "reward": 1, "event_id": "x"},
                {"id": "item_0000001", "reward": 0},
            ],
        )

        def metric(name: str) -> float:
            text = server.request("GET", "/metrics").body.decode()
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(name + " ") or line.startswith(name + "{")
            )

        eventually_sync(lambda: metric("mab_feedback_events_total") == 2)
        assert metric("mab_feedback_duplicates_total") == 1
        assert metric("mab_feedback_new_arms_total") == 1
        assert metric("mab_arms") == 101
