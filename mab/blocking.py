"""Blocking-call detection for development and tests (MAB_DETECT_BLOCKING=1).

With it on, each worker runs blockbuster (the detector aiohttp's own tests use): a
call that would block the event loop thread (time.sleep, a file read, a blocking
socket call, waiting on a lock) while the loop runs raises `BlockingError` instead,
which the request handler logs and answers as a 500. The test suite turns it on for
every server it starts and fails a test whose server logged one. A few calls block
on purpose, in a bounded way, and are allowed below, each with its reason.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "MAB_DETECT_BLOCKING"

_ANY = ["*"]

# (module file, functions in it that may block, which calls, why)
_ALLOWED: list[tuple[str, list[str], list[str]]] = [
    # The test clock (MAB_FAKE_CLOCK) is a file read on every call: tests only.
    ("mab/clock.py", ["now"], _ANY),
    # A feedback record is one write(2), under the table's lock, so that records keep
    # the lock's order; its fsync, the wait, runs off the loop (mab/state/commit.py).
    # The SQLite journal exists for bench/journal.py only; it opens its database once.
    ("mab/state/sqlite_journal.py", ["__init__", "close"], _ANY),
    # Opening and closing a worker's journal: once each, at start and at stop.
    ("mab/state/journal.py", ["append", "switch", "_open", "__init__", "close"], _ANY),
    # Building a Google client reads its config files: once per worker, at start-up.
    ("mab/store/vertex_readers.py", ["open"], _ANY),
    # Finding the credentials reads files: once, in the parent, before any loop runs
    # (the tests build stores inside a loop).
    ("mab/store/vertex.py", ["_check_credentials"], _ANY),
    # TLS to Redis (rediss://): redis-py builds its SSL context, reading the CA and
    # certificate files, at a worker's first connection; once, then cached.
    ("redis/asyncio/connection.py", ["get"], _ANY),
    # Log lines go out in one write(2) per loop iteration, by design (mab/log.py).
    ("mab/log.py", ["_write", "flush"], ["io.BufferedWriter.write", "os.write"]),
    # Metrics: the shared values are mmap'd files behind a lock held for microseconds;
    # /metrics reads them (mab/metrics.py).
    (
        "mab/metrics.py",
        ["flush", "render", "__init__"],
        ["threading.Lock.acquire", "io.BufferedReader.read", "os.stat", "os.listdir", "os.scandir"],
    ),
]


def start_detector() -> Any:
    """A running blockbuster detector, with the allowances above."""
    from blockbuster import BlockBuster

    detector = BlockBuster()
    detector.activate()
    for filename, functions, calls in _ALLOWED:
        for call in detector.functions if calls == _ANY else calls:
            detector.functions[call].can_block_in(filename, functions)
    return detector


def detect_blocking() -> Any:
    """Start detecting, if MAB_DETECT_BLOCKING=1; returns the detector (or None)."""
    return start_detector() if os.environ.get(ENV) == "1" else None
