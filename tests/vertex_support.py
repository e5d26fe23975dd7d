"""Shared pieces of the Vertex tests: a known-answer catalog, stores aimed at a fake,
and a runner for async tests (no pytest-asyncio here: each test gets a fresh uvloop)."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import uvloop

from mab.config import VertexConfig
from mab.store.vertex import VertexFeaturestoreStore, VertexOnlineStore, VertexStore
from tests.support import HOST, free_port

ENTITY_TYPE = "projects/test/locations/us-central1/featurestores/fs/entityTypes/arms"
FEATURE_VIEW = "projects/test/locations/us-central1/featureOnlineStores/os/featureViews/arms"
KINDS = ["featurestore", "online", "online-streaming"]

# Known answers: arm i has i successes and 3000 - i failures; every 7th arm has a
# fractional count, which the fake serves as a DOUBLE instead of an INT64.
ARMS: dict[str, tuple[float, float]] = {
    f"arm_{i:05d}": (i + (0.5 if i % 7 == 0 else 0.0), 3000.0 - i) for i in range(2000)
}
KNOWN = list(ARMS)


def write_catalog(path: Path) -> Path:
    lines = ["arm_id,successes,failures", *(f"{a},{s},{f}" for a, (s, f) in ARMS.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def vertex_config(kind: str, address: str, **overrides: Any) -> VertexConfig:
    config = VertexConfig(
        entity_type=ENTITY_TYPE,
        feature_view=FEATURE_VIEW,
        endpoint=address,
        insecure=True,
        streaming=kind == "online-streaming",
    )
    return replace(config, **overrides)


def make_store(kind: str, address: str, **overrides: Any) -> VertexStore:
    config = vertex_config(kind, address, **overrides)
    if kind == "featurestore":
        return VertexFeaturestoreStore(config)
    return VertexOnlineStore(config)


@asynccontextmanager
async def open_store(kind: str, address: str, **overrides: Any) -> AsyncIterator[VertexStore]:
    """A started store of `kind` on the fake at `address`, closed on exit."""
    store = make_store(kind, address, **overrides)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def store_args(kind: str, address: str) -> list[str]:
    """`mab serve` flags for a store aimed at the fake."""
    if kind == "featurestore":
        args = ["--store", "vertex-featurestore", "--vertex-entity-type", ENTITY_TYPE]
    else:
        args = ["--store", "vertex-online", "--vertex-feature-view", FEATURE_VIEW]
        if kind == "online":
            args.append("--no-vertex-streaming")  # the batch read is the default
    return [*args, "--vertex-endpoint", address, "--vertex-insecure"]


P = ParamSpec("P")
T = TypeVar("T")


def run(work: Awaitable[T], timeout: float = 30.0) -> T:
    """Run `work` on a fresh uvloop (what the workers run), with a timeout."""

    async def body() -> T:
        async with asyncio.timeout(timeout):
            return await work

    return uvloop.run(body())


def async_test(fn: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """An async test body, run by `run()` (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def test(*args: P.args, **kwargs: P.kwargs) -> None:
        run(fn(*args, **kwargs))

    return test


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for `check()` to hold (e.g. the fake seeing a cancellation arrive)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


@contextmanager
def fake_process(catalog: Path, *args: str) -> Iterator[str]:
    """`mab fake-vertex` in its own process (its own CPU); yields its address."""
    port = free_port()
    cmd = [sys.executable, "-m", "mab", "fake-vertex", "--catalog", str(catalog)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, f"fake-vertex did not start: {line}{proc.stdout.read()}"
        yield f"{HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
