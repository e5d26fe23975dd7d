"""Balancing the workers' load by moving keep-alive connections."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import pytest

from mab.balance import (
    MAX_MOVES,
    WINDOW_S,
    ConnectionBalancer,
    LoadBoard,
    connections_to_move,
)
from tests.support import HOST, ServerProcess, run_server

ITEMS = [f"item_{i:07d}" for i in range(0, 100_000, 10)]  # 10,000 ids: ~1 ms of work


def test_moves_even_out_connections_over_throughput() -> None:
    """38 connections at 25 ms against 26 at 17 ms: ~6 moves even them, half are asked
    for. An idle worker gets one at a time; a single connection never moves."""
    assert connections_to_move(0.025, 38, 0.017, 26) == 3
    assert connections_to_move(0.040, 60, 0.002, 4) == MAX_MOVES
    assert connections_to_move(0.030, 10, 0.0, 0) == 1
    assert connections_to_move(0.030, 1, 0.001, 5) == 0


def test_the_board_is_shared_with_forked_workers() -> None:
    """What a forked child publishes, the parent reads; a retired or silent worker is
    left out of the choice."""
    board = LoadBoard(3)
    pid = os.fork()
    if pid == 0:  # the child: a worker
        board.publish(1, 0.004, 7)
        board.publish(2, 0.009, 9)
        os._exit(0)
    os.waitpid(pid, 0)
    assert board.least_loaded(fresh_after=time.monotonic() - 1) == (1, 0.004, 7)
    board.retire(1)
    assert board.least_loaded(fresh_after=time.monotonic() - 1) == (2, 0.009, 9)
    assert board.least_loaded(fresh_after=time.monotonic()) is None


def _tick(balancer: ConnectionBalancer, mean_s: float, conns: int) -> int:
    """One window in which every request took `mean_s`; returns the connections the
    balancer then asks to close."""
    for _ in range(10):
        balancer.observe(mean_s)
    balancer.tick(conns)
    closes = 0
    while balancer.close_next():
        closes += 1
    return closes


def test_only_the_busy_worker_closes_and_only_beyond_the_margins() -> None:
    """The worker whose mean is well over the least loaded one closes a few
    connections, then waits for fresh means; near-even loads move nothing."""
    board = LoadBoard(2)
    busy, idle = ConnectionBalancer(board, 0), ConnectionBalancer(board, 1)
    assert _tick(idle, 0.015, 30) == 0  # the least loaded never closes
    assert _tick(busy, 0.016, 34) == 0  # within 15%: even enough
    assert _tick(busy, 0.0154 + 0.0006, 34) == 0
    assert _tick(busy, 0.025, 38) == connections_to_move(0.025, 38, 0.015, 30) > 0
    assert _tick(busy, 0.025, 37) == 0  # settling: the next means include the reconnects
    busy._quiet_until = 0.0
    assert _tick(busy, 0.025, 36) > 0


def test_light_load_moves_nothing() -> None:
    """At light load means differ by a fraction of a request's own time: no move."""
    board = LoadBoard(2)
    busy, idle = ConnectionBalancer(board, 0), ConnectionBalancer(board, 1)
    _tick(idle, 0.0003, 3)
    assert _tick(busy, 0.0005, 3) == 0


def _imbalanced_load(server: ServerProcess, seconds: float) -> tuple[str, list[object], list[str]]:
    """Nine keep-alive clients, eight on one worker (told apart by the pid in the
    request ids), posting 10,000-id requests until a connection is closed or
    `seconds` pass. Returns the busy worker, every status (or error) and the worker
    of each response that said `Connection: close`."""
    body = json.dumps({"items": ITEMS, "top_k": 10}).encode()  # cheap for the client to read
    headers = {"Content-Type": "application/json"}
    opened: dict[str, list[http.client.HTTPConnection]] = {}
    while len(opened) < 2 or max(map(len, opened.values())) < 8:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        opened.setdefault(response.getheader("X-Request-ID", "").split("-")[0], []).append(conn)
    busy = max(opened, key=lambda w: len(opened[w]))
    clients = []
    for worker, conns in opened.items():
        keep = 8 if worker == busy else 1
        clients += conns[:keep]
        for conn in conns[keep:]:
            conn.close()
    statuses: list[object] = []
    closed: list[str] = []
    stop = threading.Event()

    def client(conn: http.client.HTTPConnection) -> None:
        while not stop.is_set():
            try:
                conn.request("POST", "/predict", body, headers)
                response = conn.getresponse()
                response.read()
                statuses.append(response.status)
                if response.getheader("Connection", "").lower() == "close":
                    closed.append(response.getheader("X-Request-ID", "").split("-")[0])
                    conn.close()  # http.client reconnects on the next request
            except OSError as exc:
                statuses.append(exc)
                return

    threads = [threading.Thread(target=client, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not closed:
        time.sleep(WINDOW_S)
    time.sleep(2 * WINDOW_S)  # the reconnects serve too
    stop.set()
    for thread in threads:
        thread.join(15)
    for conn in clients:
        conn.close()
    return busy, statuses, closed


@pytest.mark.timeout(60)
def test_a_busy_worker_hands_connections_over_without_failing_a_request() -> None:
    """Eight of nine clients on one worker: its requests queue, so it answers some
    with `Connection: close`; the clients reconnect and every request answers 200."""
    with run_server() as server:
        busy, statuses, closed = _imbalanced_load(server, seconds=40 * WINDOW_S)
        assert closed, f"no connection was handed over in {len(statuses)} requests"
        assert closed[0] == busy
        assert [s for s in statuses if s != 200] == []
        assert _rebalanced_total(server) >= 1  # each worker flushes its counts every second


@pytest.mark.timeout(60)
def test_no_rebalance_keeps_every_connection() -> None:
    """With --no-rebalance the same imbalance closes no connection."""
    with run_server("--no-rebalance") as server:
        _, statuses, closed = _imbalanced_load(server, seconds=10 * WINDOW_S)
        assert closed == [] and len(statuses) > 100
        assert [s for s in statuses if s != 200] == []


def _rebalanced_total(server: ServerProcess) -> float:
    deadline = time.monotonic() + 3.0
    while True:
        text = server.request("GET", "/metrics").body.decode()
        total = sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("mab_rebalanced_connections_total")
        )
        if total or time.monotonic() > deadline:
            return total
        time.sleep(0.2)
