"""Run the real server as a subprocess on a free loopback port and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil

HOST = "127.0.0.1"
# The two builds of the pipeline a server can run: the native one, and its pure
# numpy / Python twin (MAB_NO_NATIVE=1). The API tests run against both.
BACKENDS = {"native": {}, "twin": {"MAB_NO_NATIVE": "1"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def eventually_sync(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `check()` holds; the timeout only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ServerProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: str
    env: dict[str, str] = field(default_factory=dict)  # what run_server was given
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{HOST}:{self.port}"

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        events = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def wait_for_log(self, field: str, value: object, timeout: float = 2.0) -> list[dict[str, Any]]:
        """The log events whose `field` is `value`, once there is at least one: lines
        are written when the server's loop iteration ends, just after the response."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.log_events() if e.get(field) == value]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One request on a new connection."""
        if isinstance(body, dict):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            raw = conn.getresponse()
            return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
        finally:
            conn.close()

    def predict(self, payload: dict[str, Any], **kwargs: Any) -> Response:
        return self.request("POST", "/predict", payload, **kwargs)

    def workers(self) -> list[int]:
        """PIDs of the live worker processes."""
        return [c.pid for c in psutil.Process(self.proc.pid).children() if c.status() != "zombie"]

    def wait_for(self, status: int, path: str = "/health", timeout: float = 10.0) -> Response:
        deadline = time.monotonic() + timeout
        last: Response | Exception | None = None
        while time.monotonic() < deadline:
            try:
                last = self.request("GET", path, timeout=1.0)
                if last.status == status:
                    return last
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"{path} never answered {status}; last: {last!r}\n{self.output()}")


@contextmanager
def run_server(
    *args: str,
    workers: int = 2,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 30.0,
) -> Iterator[ServerProcess]:
    """Start `mab serve` with `args`; wait until /health answers 200 (any status if
    `wait_ready` is False); stop it with SIGTERM on exit and check it exited 0."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("wb", prefix="mab-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "mab", "serve", "--port", str(port), "--workers", str(workers)]
    # Every server of the suite detects blocking calls on its loops (mab/blocking.py).
    environment = {**os.environ, "MAB_DETECT_BLOCKING": "1", **(env or {})}
    proc = subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT, env=environment)
    server = ServerProcess(port, proc, log.name, dict(env or {}))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.output()}")
            try:
                if server.request("GET", "/health", timeout=1.0).status == 200 or not wait_ready:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready after {timeout} s:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        output = server.output()
        log.close()
        os.unlink(log.name)
    # Outside the finally: a test that already failed keeps its own error.
    if "BlockingError" in output:
        raise AssertionError(f"the server blocked its event loop:\n{output}")
