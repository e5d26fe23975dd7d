"""Start-up, worker supervision and graceful shutdown of the real server."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import HOST, free_port, run_server

ITEMS = [f"item_{i:07d}" for i in range(0, 40_000, 10)]  # 4,000 ids: a few ms of work


def test_killed_worker_is_replaced_within_2s() -> None:
    """SIGKILL one worker: a new one takes its place and the server answers within 2 s."""
    with run_server() as server:
        before = server.workers()
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 2.0
        while time.monotonic() < deadline:
            now = server.workers()
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.02)
        assert len(server.workers()) == 2 and before[0] not in server.workers()
        new = next(pid for pid in server.workers() if pid not in before)
        # The new worker serves: ask until it has answered (it logs its pid in request ids).
        seen: set[str] = set()
        while time.monotonic() < deadline and f"{new:x}" not in seen:
            response = server.predict({"items": ["item_0000001"]})
            assert response.status == 200
            seen.add(response.headers["x-request-id"].split("-")[0])
        assert f"{new:x}" in seen, "the replacement worker did not serve within 2 s"
        events = server.log_events()
        assert any(e["event"] == "worker exited" and e["pid"] == before[0] for e in events)
        assert any(e["event"] == "worker restarted" and e["pid"] == new for e in events)


def _answering_workers(port: int, connections: int) -> list[str]:
    """Open `connections` connections at once; the worker (its pid in hex, from the
    request id) that answers one request on each."""
    conns = [http.client.HTTPConnection(HOST, port, timeout=2) for _ in range(connections)]
    try:
        for conn in conns:
            conn.connect()
        answered = []
        for conn in conns:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            answered.append(response.getheader("X-Request-ID", "").split("-")[0])
        return answered
    finally:
        for conn in conns:
            conn.close()


def test_connections_are_spread_over_the_workers() -> None:
    """Each worker has its own SO_REUSEPORT socket, so the kernel spreads connections
    by hash: of 64, each of 2 workers gets at least 12 (a binomial tail of ~1e-7)."""
    with run_server() as server:
        answered = _answering_workers(server.port, 64)
        counts = {pid: answered.count(pid) for pid in set(answered)}
        assert len(counts) == 2 and min(counts.values()) >= 12, counts
        assert sum(e["event"] == "listening" and e["sockets"] == 2 for e in server.log_events())


def test_worker_stopped_alone_is_replaced_and_accepts() -> None:
    """SIGTERM one worker only: it drops SYNs on its socket while it drains; its
    replacement must accept on that socket again, so no new connection hangs."""
    with run_server() as server:
        before = server.workers()
        os.kill(before[0], signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            now = server.workers()
            if len(now) == 2 and before[0] not in now:
                break
            time.sleep(0.02)
        now = server.workers()
        assert len(now) == 2 and before[0] not in now
        server.wait_for(200)
        new = next(pid for pid in now if pid not in before)
        answered = _answering_workers(server.port, 32)  # a dropped SYN: a 2 s timeout
        assert f"{new:x}" in answered


def test_sigterm_under_load_fails_no_request() -> None:
    """SIGTERM while clients are busy: every request the server took answers 200, the
    server stops accepting, and the parent exits 0 within the graceful timeout."""
    body = json.dumps({"items": ITEMS}).encode()
    outcomes: list[object] = []
    stop = threading.Event()

    def client(port: int) -> None:
        while not stop.is_set():
            conn = http.client.HTTPConnection(HOST, port, timeout=10)
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                outcomes.append(conn.getresponse().status)
            except ConnectionRefusedError:
                return  # the listener is closed: the shutdown has begun
            except OSError as exc:
                outcomes.append(exc)
            finally:
                conn.close()

    with run_server("--graceful-timeout", "5") as server:
        threads = [threading.Thread(target=client, args=(server.port,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        served_before = len(outcomes)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        stop.set()
        for thread in threads:
            thread.join(10)
        assert served_before > 20, "the load did not get going"
        failures = [o for o in outcomes if o != 200]
        assert failures == [], f"{len(failures)} failed of {len(outcomes)}: {failures[:5]}"
        assert any(e["event"] == "stopped" for e in server.log_events())


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mab", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("arm_id,successes\na,1\n", 1, "missing column(s) failures"),
        ("arm_id,successes,failures\na,1,2\nb,-1,2\n", 3, "successes must be a finite count"),
        ("arm_id,successes,failures\na,1,2\nb,1,lots\n", 3, "failures is not a number"),
        ("arm_id,successes,failures\na,1,2\nb,1,2\na,3,4\n", 4, "duplicate arm_id 'a'"),
        ("arm_id,successes,failures\na,1\n", 2, "expected 3 fields, got 2"),
        ("", 1, "empty file"),
    ],
)
def test_malformed_catalog_stops_startup(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    """A bad catalog stops start-up with exit 2 and a message naming file, line, problem."""
    catalog = tmp_path / "arms.csv"
    catalog.write_text(content)
    result = _serve("--catalog", str(catalog))
    assert result.returncode == 2
    assert f"{catalog}:{line}: {problem}" in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_file_is_served(tmp_path: Path) -> None:
    """A CSV catalog is loaded: its ids are known, others are not."""
    catalog = tmp_path / "arms.csv"
    catalog.write_text("arm_id,successes,failures\nred,90,10\nblue,10,90\n")
    with run_server("--catalog", str(catalog), workers=1) as server:
        assert server.request("GET", "/health").json()["arms"] == 2
        data = server.predict({"items": ["red", "blue", "green"], "seed": 1}).json()
        assert data["unknown"] == 1
        assert data["items"][0]["id"] == "red"


def test_flags_come_from_env() -> None:
    """MAB_<NAME> sets a flag's default; a bad value names the variable."""
    with run_server(workers=1, env={"MAB_DEMO_ARMS": "123", "MAB_MAX_ITEMS": "3"}) as server:
        assert server.request("GET", "/health").json()["arms"] == 123
        assert server.predict({"items": ["a", "b", "c", "d"]}).status == 413
    result = _serve(env={"MAB_WORKERS": "many"})
    assert result.returncode == 2 and "MAB_WORKERS='many'" in result.stderr


def test_help_lists_the_flags() -> None:
    """`mab serve --help` documents every flag with its env var."""
    result = subprocess.run(
        [sys.executable, "-m", "mab", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--workers",
        "--samplers",
        "--catalog",
        "--demo-arms",
        "--prior-alpha",
        "--prior-beta",
        "--max-items",
        "--max-body-bytes",
        "--log-level",
        "--log-format",
        "--graceful-timeout",
    ):
        assert flag in result.stdout
    assert "MAB_PRIOR_ALPHA" in result.stdout


def test_port_in_use_is_a_clear_error() -> None:
    """Binding a taken port fails start-up with exit 2 and says why, also when the
    server on it listens with SO_REUSEPORT (which would let a second one join)."""
    with run_server() as server:
        result = _serve("--port", str(server.port), "--workers", "2")
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr


def test_requests_over_the_inflight_limit_are_shed() -> None:
    """With one request allowed in progress, a request that comes while another waits
    for its body gets 503 with Retry-After and a JSON body, without queueing (held
    --shed-hold, with no work done for it); the waiting one is then served, and the
    shed one is counted."""
    with run_server("--max-inflight", "1", workers=1) as server:
        with socket.create_connection((HOST, server.port), timeout=10) as held:
            body = json.dumps({"items": ITEMS[:10]}).encode()
            held.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[:5]
            )
            deadline = time.monotonic() + 10
            while (shed := server.predict({"items": ITEMS[:10]})).status != 503:
                assert shed.status == 200  # the held request was not read yet: try again
                assert time.monotonic() < deadline, "never shed"
            assert shed.headers["retry-after"] == "1"
            assert shed.json()["error"]["code"] == "overloaded"
            held.sendall(body[5:])
            assert held.recv(65536).startswith(b"HTTP/1.1 200 ")
        assert server.predict({"items": ITEMS[:10]}).status == 200
        metrics = server.request("GET", "/metrics").body.decode()
        assert 'mab_shed_total{reason="inflight"} 1.0' in metrics


def test_a_stalled_body_times_out_with_408() -> None:
    """A client that sends half its body and stalls gets 408 after --read-timeout, and
    the worker goes on serving others."""
    with run_server("--read-timeout", "0.5", workers=1) as server:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"items": ["a"'
            )
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code":"request_timeout"' in answer
        assert server.predict({"items": ["item_0000001"]}).status == 200


def test_a_chunked_body_over_the_limit_is_413_however_it_arrives() -> None:
    """A chunked body has no Content-Length to check up front: over --max-body-bytes it
    is 413 whether it all came with the headers or arrives later."""
    body = b'{"items": ["' + b"x" * 3000 + b'"]}'
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with run_server("--max-body-bytes", "1000", workers=1) as server:
        for late in (False, True):
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                if late:  # the headers first, the body once the server has them
                    sock.sendall(head)
                    time.sleep(0.2)
                    sock.sendall(chunked)
                else:
                    sock.sendall(head + chunked)
                answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 413 "), (late, answer[:80])
            assert b'"code":"payload_too_large"' in answer
        assert server.predict({"items": ["item_0000001"]}).status == 200
