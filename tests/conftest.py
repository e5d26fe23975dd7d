from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster

from mab.blocking import start_detector
from tests.support import BACKENDS, ServerProcess, run_server


@pytest.fixture(autouse=True)
def no_blocking_on_event_loops() -> Iterator[BlockBuster]:
    """Fails any test whose code blocks a running event loop in this process (a
    blocking call raises BlockingError there); servers the tests start check their
    own loops (MAB_DETECT_BLOCKING, tests/support.py)."""
    detector = start_detector()
    # gRPC's channels and servers join its poller thread when the collector frees the
    # last of them, which can happen inside any test's loop: joins are let through here
    # (the servers' own detectors still catch them).
    detector.functions["threading.Lock.acquire"].can_block_in(
        "threading.py", "_wait_for_tstate_lock"
    )
    try:
        yield detector
    finally:
        detector.deactivate()


@pytest.fixture(scope="module", params=list(BACKENDS))
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A 2-worker server on the default demo catalog, shared by a test module: once
    with the native pipeline, once with its twin."""
    env = BACKENDS[request.param]
    with run_server("--max-items", "5000", "--max-body-bytes", "200000", env=env) as running:
        yield running
