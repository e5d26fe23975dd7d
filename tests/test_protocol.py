"""The two ways a /predict is answered, over real sockets: an ordinary one from the
connection's protocol (mab/app.py, `_Connection._predict`), any other through
aiohttp's request loop. Both give the same bytes, and a connection's answers keep
the order of its requests."""

from __future__ import annotations

import json
import socket
import struct

from tests.support import HOST, eventually_sync, run_server

BODY = json.dumps({"user_id": "u1", "items": ["item_0000001", "item_0000002", "x"], "seed": 5})


def _request(body: str = BODY, *headers: str, path: str = "/predict") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    head += [*headers, f"Content-Length: {len(body.encode())}", "", ""]
    return "\r\n".join(head).encode() + body.encode()


def _answers(sock: socket.socket, n: int) -> list[tuple[bytes, list[tuple[str, str]], bytes]]:
    """The next n answers on the connection: status line, headers in order, body."""
    data, answers = b"", []
    while len(answers) < n:
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
        length = int(dict(headers)["Content-Length"])
        while len(data) < length:
            data += sock.recv(65536)
        answers.append((status.encode(), headers, data[:length]))
        data = data[length:]
    return answers


def _without(headers: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name not in names]


def test_the_protocol_and_aiohttp_answer_byte_for_byte_alike() -> None:
    """The same requests, once keep-alive (answered by the protocol) and once with
    Connection: close (aiohttp's request loop, which the protocol leaves those to):
    the same status line, headers in the same order and body; only Date may move and
    the second says Connection: close. For a 200, a 400 and a 413."""
    with run_server("--demo-arms", "1000", "--max-body-bytes", "4096", workers=1) as server:
        cases = [
            (BODY, "200 OK"),
            ('{"items": [1]}', "400 Bad Request"),
            (json.dumps({"items": ["a" * 5000]}), "413 Request Entity Too Large"),
        ]
        for body, status in cases:
            ids = ["X-Request-ID: same-id"]
            with socket.create_connection((HOST, server.port), timeout=10) as sock:
                sock.sendall(_request(body, *ids))
                [kept] = _answers(sock, 1)
            with socket.create_connection((HOST, server.port), timeout=10) as sock:
                sock.sendall(_request(body, *ids, "Connection: close"))
                [closed] = _answers(sock, 1)
            assert kept[0] == closed[0] == f"HTTP/1.1 {status}".encode()
            assert _without(kept[1], "Date") == _without(closed[1], "Date", "Connection")
            assert ("Connection", "close") in closed[1]
            assert kept[2] == closed[2]
            names = [name for name, _ in kept[1]]
            assert names[-3:] == ["Content-Length", "Date", "Server"], names


def test_pipelined_requests_are_answered_in_order() -> None:
    """Requests written back to back before any answer, /predict among others: the
    answers come in the order asked, on one connection."""
    with run_server("--demo-arms", "1000", workers=1) as server:
        seeds = [1, 2, 3]
        requests = [
            _request(json.dumps({"items": ["item_0000001"], "seed": seeds[0], "user_id": "a"})),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            _request(json.dumps({"items": ["item_0000001"], "seed": seeds[1], "user_id": "b"})),
            _request('{"items": 7}'),
            _request(json.dumps({"items": ["item_0000001"], "seed": seeds[2], "user_id": "c"})),
        ]
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(b"".join(requests))
            answers = _answers(sock, len(requests))
            # and one more after them, on the same connection
            sock.sendall(_request(json.dumps({"items": ["item_0000001"], "user_id": "d"})))
            answers += _answers(sock, 1)
        bodies = [json.loads(body) for _, _, body in answers]
        assert [b.get("user_id") for b in bodies] == ["a", None, "b", None, "c", "d"]
        assert bodies[1]["status"] == "ok"
        assert bodies[3]["error"]["code"] == "bad_request"


def test_clients_that_leave_before_their_answer_cost_nothing_more() -> None:
    """Fifty connections send a 4,000-id /predict each and reset at once, so some
    leave while their request waits for the lane: the worker stays up, serves the
    next client, and its count of open connections comes back to the scrape's own."""
    with run_server("--demo-arms", "1000", workers=1) as server:
        body = json.dumps({"items": [f"item_{i:07d}" for i in range(4000)]})
        for _ in range(50):
            sock = socket.create_connection((HOST, server.port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(_request(body))
            sock.close()  # a reset: the answer has nowhere to go
        assert server.predict({"items": ["item_0000001"]}).status == 200

        def only_the_scrape_is_open() -> bool:
            metrics = server.request("GET", "/metrics").body.decode()
            return "mab_open_connections 1.0" in metrics

        eventually_sync(only_the_scrape_is_open)


def test_an_http_1_0_keep_alive_request_is_answered_as_http_1_0() -> None:
    """HTTP/1.0 with Connection: keep-alive is left to aiohttp, which answers in the
    request's version and says keep-alive; the connection then serves again."""
    with run_server("--demo-arms", "1000", workers=1) as server:
        request = _request(BODY, "Connection: keep-alive").replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(request)
                [(status, headers, body)] = _answers(sock, 1)
                assert status == b"HTTP/1.0 200 OK"
                assert ("Connection", "keep-alive") in headers
                assert json.loads(body)["user_id"] == "u1"
