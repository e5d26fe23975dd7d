"""Fuzzing the live server: schemathesis from the OpenAPI document (valid and invalid
requests of every operation), then a hypothesis corpus of raw bodies, headers,
methods, paths and encodings over a socket. Over 10,000 cases in all: no 5xx, no
worker death, every error in the JSON error shape, and a valid request answered after."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

from tests.support import HOST, ServerProcess, run_server

DOCUMENT = Path(__file__).resolve().parent.parent / "mab" / "openapi.json"
SPEC = json.loads(DOCUMENT.read_text())
ERROR = jsonschema_rs.validator_for(
    {**SPEC["components"]["schemas"]["Error"], "components": SPEC["components"]}
)
SCHEMA_CASES = 1_500  # at most, per operation and mode
RAW_CASES = 5_000
FUZZ = settings(
    max_examples=SCHEMA_CASES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a failure reproduces
)


@pytest.fixture(scope="module")
def target() -> Any:
    args = ("--demo-arms", "1000", "--max-items", "2000", "--max-body-bytes", "100000")
    with run_server(*args, "--max-events", "2000") as server:
        yield server, server.workers()


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.statuses: dict[int, int] = {}

    def saw(self, status: int) -> None:
        self.cases += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


TALLY = Tally()


def _assert_answer(status: int, content_type: str, body: bytes) -> None:
    assert status < 500 or status == 503, (status, body[:300])
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type)
        ERROR.validate(json.loads(body))


OPERATIONS = [
    ("POST", "/predict"),
    ("POST", "/feedback"),
    ("GET", "/arms/{id}"),
    ("GET", "/health"),
    ("GET", "/openapi.json"),
]


# Invalid cases for the operations that take a body; the others have none to break
# (an empty arm id cannot be a path).
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS[:2]
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_schemathesis_finds_no_server_error(
    target: tuple[ServerProcess, list[int]], method: str, path: str, mode: GenerationMode
) -> None:
    """Cases generated from the document, fitting it or not: every answer is one the
    document describes (status, body schema), never a 5xx other than a shed 503."""
    server, _ = target
    schema = schemathesis.openapi.from_path(DOCUMENT)
    operation = schema[path][method]
    session = requests.Session()

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=server.url, session=session, timeout=10)
        TALLY.saw(response.status_code)
        kind = response.headers.get("content-type") or [""]  # schemathesis: a list each
        _assert_answer(response.status_code, kind[0], response.content)
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response)

    run()


def _raw(server: ServerProcess, request: bytes) -> tuple[int, str, bytes]:
    """Send bytes, read one answer (or the close): status, content type, body."""
    with socket.create_connection((HOST, server.port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data:
        return 0, "", b""  # the server closed a connection it could not parse: fine
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
    return status, headers.get(b"Content-Type", b"").decode(), body


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_TEXT, inner, max_size=5),
    max_leaves=20,
)
_BODY = st.one_of(
    st.binary(max_size=300),
    _JSONISH.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"items": st.lists(st.one_of(_TEXT, st.integers()), max_size=30)},
        optional={"top_k": _JSONISH, "seed": _JSONISH, "user_id": _JSONISH},
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "events": st.lists(
                st.dictionaries(
                    st.sampled_from(["id", "reward", "count", "event_id", "x"]), _JSONISH
                ),
                max_size=5,
            )
        }
    ).map(lambda v: json.dumps(v).encode()),
)
_METHOD = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"])
_PATH = st.one_of(
    st.sampled_from(["/predict", "/feedback", "/health", "/metrics", "/openapi.json", "/arms/x"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(lambda p: "/" + p),
)
_TYPE = st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1", ""])


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    method, path, body = draw(_METHOD), draw(_PATH), draw(_BODY)
    headers = ["Host: x", f"Content-Type: {draw(_TYPE)}"]
    framing = draw(st.sampled_from(["length", "chunked", "wrong length", "none"]))
    if framing == "length":
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "wrong length":
        headers.append(f"Content-Length: {len(body) + draw(st.integers(-5, 5))}")
    elif framing == "chunked":
        headers.append("Transfer-Encoding: chunked")
        body = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    headers += draw(
        st.lists(
            st.sampled_from(
                [
                    "X-Request-ID: " + "r" * 50,
                    "Expect: 100-continue",
                    "Connection: close",
                    "X: \x7f",
                ]
            ),
            max_size=3,
        )
    )
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def test_raw_requests_never_get_a_server_error(target: tuple[ServerProcess, list[int]]) -> None:
    """Random methods, paths, bodies, content types and framings (lengths right and
    wrong, chunked): an answer is never a 5xx but a shed 503, and errors are JSON."""
    server, _ = target

    @settings(FUZZ, max_examples=RAW_CASES)
    @given(request=raw_requests())
    def run(request: bytes) -> None:
        status, kind, body = _raw(server, request)
        TALLY.saw(status)  # 0: closed without an answer (a request it could not frame)
        if status:
            if not request.startswith(b"HEAD "):  # an answer to HEAD has no body
                _assert_answer(status, kind, body)

    run()


def test_after_the_fuzzing_the_server_still_serves(target: tuple[ServerProcess, list[int]]) -> None:
    """Over 10,000 cases ran; the same workers are alive, none died, and a valid request
    is answered."""
    server, workers = target
    assert TALLY.cases >= 10_000, TALLY.cases
    assert sorted(server.workers()) == sorted(workers)
    assert "worker exited" not in server.output()
    assert server.predict({"items": ["item_0000001"]}).status == 200
    print(f"fuzz cases: {TALLY.cases}, statuses: {dict(sorted(TALLY.statuses.items()))}")
