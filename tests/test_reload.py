"""SIGHUP reloads the catalog without failing a request; a bad file changes nothing;
the parent's death takes its workers with it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support import HOST, ServerProcess, eventually_sync, run_server

ARMS = 2_000
ITEMS = [f"arm_{i}" for i in range(0, ARMS, 5)]  # 400 ids


def _write_catalog(path: Path, successes: int, failures: int) -> None:
    rows = "".join(f"arm_{i},{successes},{failures}\n" for i in range(ARMS))
    path.write_text("arm_id,successes,failures\n" + rows)


def _counts(server: ServerProcess, arm: str) -> tuple[float, float]:
    body = server.request("GET", f"/arms/{arm}").json()
    return body["successes"], body["failures"]


class Load:
    """Threads that post /predict on keep-alive connections until stopped. A reused
    connection that the server closed between two requests (a retired worker's idle
    keep-alive) is opened again and the request sent again, as HTTP clients do; any
    answer other than 200, and any other error, is kept."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.statuses: dict[int, int] = {}
        self.errors: list[BaseException] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._body = json.dumps({"items": ITEMS}).encode()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def _run(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        fresh = True
        while not self._stop.is_set():
            try:
                conn.request("POST", "/predict", self._body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                with self._lock:
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                fresh = False
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if fresh:  # a new connection that failed: a real error
                    self.errors.append(exc)
                with self._lock:
                    self.reconnects += 1
                conn, fresh = http.client.HTTPConnection(HOST, self.port, timeout=10), True
            except OSError as exc:
                self.errors.append(exc)
                return
        conn.close()


def _wait_for_reload(server: ServerProcess, outcome_event: str) -> dict[str, object]:
    found = server.wait_for_log("event", outcome_event, timeout=30)
    assert found, server.output()
    return found[-1]


def test_sighup_with_a_changed_catalog_fails_no_request(tmp_path: Path) -> None:
    """Under load, SIGHUP with a changed catalog: every answer is 200, new workers
    serve the new counts, the old ones exit, and the metrics count the reload."""
    catalog = tmp_path / "arms.csv"
    _write_catalog(catalog, 1, 1000)
    with run_server("--catalog", str(catalog)) as server:
        old_workers = set(server.workers())
        assert _counts(server, "arm_5") == (1, 1000)
        with Load(server.port) as load:
            eventually_sync(lambda: load.answered >= 50)
            _write_catalog(catalog, 1000, 1)
            server.proc.send_signal(signal.SIGHUP)
            event = _wait_for_reload(server, "catalog reloaded")
            # Retired workers exit once their requests are done.
            eventually_sync(lambda: not old_workers & set(server.workers()), timeout=20)
            before = load.answered
            eventually_sync(lambda: load.answered >= before + 50)
        assert load.errors == [], load.errors[:3]
        assert set(load.statuses) == {200}, load.statuses
        # Draining workers answer with Connection: close, so no client wrote a request
        # into a keep-alive connection as it was closed under it.
        assert load.reconnects == 0, load.reconnects
        assert set(event["retiring"]) == old_workers  # type: ignore[arg-type]
        assert len(server.workers()) == 2 and not old_workers & set(server.workers())
        # Every worker serves the new counts: ask on new connections until both answered.
        seen: set[str] = set()
        for _ in range(200):
            response = server.request("GET", "/arms/arm_5")
            assert (response.json()["successes"], response.json()["failures"]) == (1000, 1)
            seen.add(response.headers["x-request-id"].split("-")[0])
            if len(seen) == 2:
                break
        assert len(seen) == 2
        metrics = server.request("GET", "/metrics").body.decode()
        assert 'mab_catalog_reloads_total{outcome="loaded"} 1.0' in metrics
        assert f"mab_catalog_arms {ARMS}.0" in metrics
        events = [e["event"] for e in server.log_events()]
        assert "worker exited" not in events  # retired, not crashed
        assert events.count("retired worker exited") == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "arm_id,successes,failures\narm_0,1,2\narm_1,1,lots\n",
            ":3: failures is not a number",
        ),
        ("arm_id,successes\n", ":1: missing column(s) failures"),
    ],
)
def test_sighup_with_a_broken_catalog_keeps_the_old_one(
    tmp_path: Path, content: str, problem: str
) -> None:
    """A new file that does not load is refused with its file, line and problem in the
    log; the same workers keep serving the old counts."""
    catalog = tmp_path / "arms.csv"
    _write_catalog(catalog, 1, 1000)
    with run_server("--catalog", str(catalog)) as server:
        workers = set(server.workers())
        catalog.write_text(content)
        server.proc.send_signal(signal.SIGHUP)
        event = _wait_for_reload(server, "reload rejected: the old catalog keeps serving")
        assert str(catalog) in str(event["error"]) and problem in str(event["error"])
        assert set(server.workers()) == workers
        assert _counts(server, "arm_5") == (1, 1000)
        assert server.predict({"items": ITEMS}).status == 200
        metrics = server.request("GET", "/metrics").body.decode()
        assert 'mab_catalog_reloads_total{outcome="rejected"} 1.0' in metrics


def test_sighup_with_the_same_catalog_changes_nothing(tmp_path: Path) -> None:
    """An untouched file: no new workers, and the learned counts stay."""
    catalog = tmp_path / "arms.csv"
    _write_catalog(catalog, 1, 1000)
    with run_server("--catalog", str(catalog)) as server:
        workers = set(server.workers())
        feedback = {"events": [{"id": "arm_5", "reward": 1}]}
        assert server.request("POST", "/feedback", feedback).status == 200
        server.proc.send_signal(signal.SIGHUP)
        _wait_for_reload(server, "reload: the catalog is unchanged, nothing to do")
        assert set(server.workers()) == workers
        assert _counts(server, "arm_5") == (2, 1000)


def _exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: it has exited and holds nothing, and waits for init to reap
    it (after its parent's death it is init's child, and reaping is init's pace)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_9_of_the_parent_takes_every_worker_down() -> None:
    """No worker outlives a parent killed outright, and the port is free again."""
    with run_server() as server:
        workers = [psutil.Process(pid) for pid in server.workers()]
        assert len(workers) == 2
        os.kill(server.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        server.proc.wait(10)
        eventually_sync(lambda: all(_exited(w) for w in workers))
        took = time.monotonic() - killed
        with socket.socket() as probe:  # no worker holds the port any more
            probe.bind((HOST, server.port))
        print(f"workers exited {took:.3f} s after the parent")  # RESULTS records the figure


def test_a_reload_with_state_dir_supersedes_the_learned_counts(tmp_path: Path) -> None:
    """With --state-dir: the new catalog's counts replace what was learned, the old
    state is kept aside, and feedback after the reload is durable across a restart."""
    catalog, state = tmp_path / "arms.csv", tmp_path / "state"
    _write_catalog(catalog, 1, 1000)
    args = ("--catalog", str(catalog), "--state-dir", str(state))
    with run_server(*args) as server:
        before = {"events": [{"id": "arm_5", "reward": 1, "count": 10}]}
        assert server.request("POST", "/feedback", before).status == 200
        assert _counts(server, "arm_5") == (11, 1000)
        _write_catalog(catalog, 500, 500)
        server.proc.send_signal(signal.SIGHUP)
        _wait_for_reload(server, "catalog reloaded")
        eventually_sync(lambda: _counts(server, "arm_5") == (500, 500))
        after = {"events": [{"id": "arm_5", "reward": 0, "count": 3}]}
        # Until the old workers are gone a request may still reach one: wait for them.
        eventually_sync(lambda: server.output().count('"retired worker exited"') == 2, timeout=20)
        assert server.request("POST", "/feedback", after).status == 200
        assert _counts(server, "arm_5") == (500, 503)
    assert [p.name for p in state.iterdir() if p.name.startswith("superseded-")]
    with run_server(*args) as again:  # a restart on the same catalog and state
        assert _counts(again, "arm_5") == (500, 503)
