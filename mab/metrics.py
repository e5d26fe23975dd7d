"""Prometheus metrics that add up across worker processes.

prometheus_client's multiprocess mode keeps each process's values in mmap'd files
under one directory; `/metrics` in any worker sums them. The directory must be in
the environment before prometheus_client is imported, so the supervisor calls
`use_directory()` first and everything else imports this module's metrics lazily.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def use_directory(path: Path) -> None:
    """Point prometheus_client at `path`, emptied of a previous run's files."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[_ENV] = str(path)


def mark_process_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """The metrics one worker updates; built after the fork."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("mab_requests", "HTTP requests served", ["path", "status"])
        self.latency = Histogram(
            "mab_request_duration_seconds", "Time to answer /predict", buckets=LATENCY_BUCKETS
        )
        self.predictions = Counter("mab_predictions", "Items scored")
        self.unknown = Counter("mab_unknown_items", "Items not in the feature store")
        self.shed = Counter("mab_shed", "Requests refused with 503 because of overload")
        self.inflight = Gauge(
            "mab_inflight_requests", "Requests in progress", multiprocess_mode="livesum"
        )

    @staticmethod
    def render() -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data: Any = generate_latest(registry)
        return bytes(data)


def worker_restarts() -> Any:
    """The supervisor's counter of replaced workers (it lives in the parent)."""
    from prometheus_client import Counter

    return Counter("mab_worker_restarts", "Workers that died and were replaced")
