"""Overload over real sockets: 2,000 connections, each posting /predict as soon as it has
its last answer, against two workers. What comes back is its shape, counted: only 200
and 503, every 503 with Retry-After and the JSON error, each one counted in /metrics,
and no worker lost. How fast and how many are bench/overload.py's business
(bench/RESULTS.md, section 10), not a test's."""

from __future__ import annotations

import json
import re
import selectors
import socket

import pytest

from tests.support import HOST, ServerProcess, eventually_sync, run_server

CONNECTIONS = 2000
ROUNDS = 3  # requests per connection
# 4,000 ids: a request costs the server many times what sending it costs this client,
# on any CPU, so a queue over the workers' floor (mab.lane.MIN_BACKLOG) builds.
IDS = 4000


def _request(port: int) -> bytes:
    body = json.dumps({"items": [f"item_{i:07d}" for i in range(IDS)]}).encode()
    return (
        b"POST /predict HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), port, len(body), body)
    )


def _answer(buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(head, body, rest) once a whole answer is in buffer, else None."""
    head, found, rest = buffer.partition(b"\r\n\r\n")
    if not found:
        return None
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    if len(rest) < length:
        return None
    return head, rest[:length], rest[length:]


def _storm(server: ServerProcess) -> list[tuple[bytes, bytes]]:
    """CONNECTIONS clients, ROUNDS requests each, each sent the moment the one before
    is answered (a closed loop, as wrk); every answer's head and body."""
    request = _request(server.port)
    selector = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytes] = {}
    left: dict[socket.socket, int] = {}
    for _ in range(CONNECTIONS):
        sock = socket.create_connection((HOST, server.port), timeout=30)
        sock.setblocking(False)
        buffers[sock], left[sock] = b"", ROUNDS
        selector.register(sock, selectors.EVENT_READ)
    for sock in buffers:
        sock.setblocking(True)
        sock.sendall(request)
        sock.setblocking(False)
    answers: list[tuple[bytes, bytes]] = []
    while left:
        events = selector.select(timeout=30)
        assert events, f"no answer for 30 s; {len(answers)} answers so far"
        for key, _ in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed a connection"
            buffers[sock] += chunk
            while (whole := _answer(buffers[sock])) is not None:
                head, body, buffers[sock] = whole
                answers.append((head, body))
                left[sock] -= 1
                if left[sock]:
                    sock.setblocking(True)
                    sock.sendall(request)
                    sock.setblocking(False)
                else:
                    del left[sock]
                    selector.unregister(sock)
                    sock.close()
    selector.close()
    return answers


def _metrics(server: ServerProcess, prefix: str) -> dict[str, float]:
    """The samples of /metrics whose name and labels start with prefix."""
    lines = server.request("GET", "/metrics").body.decode().splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines)
        if name.startswith(prefix)
    }


@pytest.mark.parametrize("hold", ["0.25", "0"], ids=["held 503s", "503s at once"])
def test_overload_is_shed_with_503_and_retry_after(hold: str) -> None:
    with run_server("--demo-arms", "1000", "--shed-hold", hold) as server:
        workers = server.workers()
        answers = _storm(server)
        assert len(answers) == CONNECTIONS * ROUNDS
        statuses = [int(head.split(b" ", 2)[1]) for head, _ in answers]
        shed = statuses.count(503)
        assert set(statuses) <= {200, 503}
        assert shed > 0, "2,000 connections against two workers shed nothing"
        for head, body in answers:
            if head.startswith(b"HTTP/1.1 503 "):
                assert b"\r\nRetry-After: 1\r\n" in head
                assert json.loads(body)["error"]["code"] == "overloaded"
            else:
                assert len(json.loads(body)["items"]) == IDS
        assert server.workers() == workers  # none died or was replaced
        assert server.predict({"items": ["item_0000001"]}).status == 200

        def counted() -> bool:
            # Most are shed for the backlog; on a loaded machine a few may first wait
            # past --max-wait (reason "delay"). Every one is counted, under one reason.
            reasons = _metrics(server, "mab_shed_total{")
            answered = _metrics(server, 'mab_requests_total{path="/predict",status="503"}')
            return (
                sum(reasons.values()) == shed
                and reasons.get('mab_shed_total{reason="backlog"}', 0) > 0
                and sum(answered.values()) == shed
            )

        eventually_sync(counted)
