"""Connection limits and timeouts over real sockets: headers that never finish, idle
keep-alive connections, and more connections than a worker takes."""

from __future__ import annotations

import json
import socket

from tests.support import HOST, ServerProcess, eventually_sync, run_server

REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 27\r\n\r\n" + b'{"items": ["item_0000001"]}'
)


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's
    timeout bounds only a failure)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _metric(server: ServerProcess, line_start: str) -> float:
    for line in server.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {line_start}")


def test_headers_that_never_finish_are_cut_off() -> None:
    """Connections that drip a request's headers are closed after --header-timeout and
    counted; a normal client is served all the while."""
    with run_server("--header-timeout", "0.5", "--demo-arms", "1000") as server:
        slow = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(50)]
        for sock in slow:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert server.predict({"items": ["item_0000001"]}).status == 200
        for sock in slow:
            assert _closed_by_server(sock) == b""
            sock.close()
        # Each worker adds its counts once a second: wait for the other's.
        eventually_sync(lambda: _metric(server, "mab_header_timeouts_total") == 50)


def test_a_request_sent_whole_is_not_cut_off_by_the_header_timeout() -> None:
    """The header timer stops when the headers are in: a body that takes its time is
    --read-timeout's business, and a keep-alive connection serves request after request."""
    with run_server("--header-timeout", "0.3", "--demo-arms", "1000", workers=1) as server:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            for _ in range(3):
                sock.sendall(REQUEST)
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
        assert _metric(server, "mab_header_timeouts_total") == 0


def test_idle_keep_alive_connections_are_closed() -> None:
    """After its answer, a connection that sends nothing more is closed after
    --keepalive-timeout."""
    with run_server("--keepalive-timeout", "0.3", "--demo-arms", "1000") as server:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(REQUEST)
            data = _closed_by_server(sock)
        assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1") == 1


def test_connections_over_the_limit_get_503_and_are_closed() -> None:
    """With --max-connections 4 on one worker, a fifth connection gets the JSON 503
    with Retry-After and is closed; the four are served, and /metrics counts it."""
    with run_server("--max-connections", "4", "--demo-arms", "1000", workers=1) as server:
        held = [socket.create_connection((HOST, server.port), timeout=10) for _ in range(4)]
        for sock in held:
            sock.sendall(REQUEST)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection((HOST, server.port), timeout=10) as extra:
            answer = _closed_by_server(extra)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in head
        assert json.loads(body)["error"]["code"] == "overloaded"
        held.pop().close()
        # The freed place is taken again once the worker has seen the close; until
        # then a new connection is refused like the fifth, and counted the same way.
        refused = 0
        while (response := server.request("GET", "/metrics")).status == 503:
            refused += 1
            assert refused < 1000
        metrics = response.body.decode()
        assert f'mab_shed_total{{reason="connections"}} {1.0 + refused}' in metrics
        assert "mab_open_connections 4.0" in metrics  # 3 held and the scrape's own
        for sock in held:
            sock.close()
