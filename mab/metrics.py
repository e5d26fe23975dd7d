"""Prometheus metrics that add up across worker processes.

prometheus_client's multiprocess mode keeps each process's values in mmap'd files
under one directory; `/metrics` in any worker sums them. The directory must be in
the environment before prometheus_client is imported, so the supervisor calls
`use_directory()` first and everything else imports this module's metrics lazily.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mab.feedback import Applied
    from mab.store.base import FeatureStore

_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLUSH_S = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def use_directory(path: Path) -> None:
    """Point prometheus_client at `path`, emptied of a previous run's files."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[_ENV] = str(path)


def mark_process_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Buffered:
    """A histogram whose observations are counted per bucket in plain numbers and
    added to the shared values at flush: one mmap write per bucket, not per
    observation. prometheus_client keeps a histogram's values per bucket, not
    cumulative, so the counts add as they are."""

    def __init__(self, histogram: Any, buckets: tuple[float, ...]) -> None:
        self._values: list[Any] = list(histogram._buckets)
        self._sum_value: Any = histogram._sum
        self._bounds = (*buckets, math.inf)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        for shared, count in zip(self._values, self._counts, strict=True):
            if count:
                shared.inc(count)
        if self._sum:
            self._sum_value.inc(self._sum)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0


class Metrics:
    """The metrics one worker updates; built after the fork.

    Updating a multiprocess value takes a lock, a pid check and an mmap write, and a
    request made four such updates. Requests add to plain
    numbers, and `flush()` moves the sums into the shared values: every FLUSH_S
    from a task of the worker, before it renders /metrics, and when it stops.
    A worker killed outright loses at most its last FLUSH_S of counts.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._requests_total = Counter("mab_requests", "HTTP requests served", ["path", "status"])
        self._latency = Histogram(
            "mab_request_duration_seconds", "Time to answer /predict", buckets=LATENCY_BUCKETS
        )
        self._predictions_total = Counter("mab_predictions", "Items scored")
        self._unknown_total = Counter("mab_unknown_items", "Items not in the feature store")
        self._shed_total = Counter(
            "mab_shed", "Requests or connections refused with 503 because of overload", ["reason"]
        )
        self._open = Gauge(
            "mab_open_connections", "Open client connections", multiprocess_mode="livesum"
        )
        self._header_timeouts_total = Counter(
            "mab_header_timeouts",
            "Connections closed: a request's headers took over --header-timeout",
        )
        self.connections = 0  # open now, kept by the server (mab/app.py)
        self._latencies = _Buffered(self._latency, LATENCY_BUCKETS)
        self._queue_delays = _Buffered(
            Histogram(
                "mab_queue_delay_seconds",
                "Time a /predict waited for the CPU (the lane or a sampler thread)",
                buckets=QUEUE_BUCKETS,
            ),
            QUEUE_BUCKETS,
        )
        self._reset()

    def _reset(self) -> None:
        self._requests: dict[tuple[str, int], int] = {}
        self._predictions = 0
        self._unknown = 0
        self._shed: dict[str, int] = {}
        self._header_timeouts = 0

    def request(self, path: str, status: int) -> None:
        key = (path, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    def prediction(self, seconds: float, items: int, unknown: int, queued: float) -> None:
        self._latencies.observe(seconds)
        self._queue_delays.observe(queued)
        self._predictions += items
        self._unknown += unknown

    def header_timeout(self) -> None:
        self._header_timeouts += 1

    def shed(self, reason: str) -> None:
        self._shed[reason] = self._shed.get(reason, 0) + 1

    def flush(self) -> None:
        for (path, status), count in self._requests.items():
            self._requests_total.labels(path, str(status)).inc(count)
        self._latencies.flush()
        self._queue_delays.flush()
        for total, count in (
            (self._predictions_total, self._predictions),
            (self._unknown_total, self._unknown),
            (self._header_timeouts_total, self._header_timeouts),
        ):
            if count:
                total.inc(count)
        for reason, count in self._shed.items():
            self._shed_total.labels(reason).inc(count)
        self._open.set(self.connections)
        self._reset()

    async def flush_every(self, seconds: float = FLUSH_S) -> None:
        """Flush until cancelled (the worker's lifetime)."""
        while True:
            await asyncio.sleep(seconds)
            self.flush()

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


class CatalogMetrics:
    """The supervisor's view of what the workers serve: the catalog's size, when it
    was loaded (its age is time() minus that), and reloads by outcome."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self._arms = Gauge(
            "mab_catalog_arms", "Arms in the catalog being served", multiprocess_mode="mostrecent"
        )
        self._loaded = Gauge(
            "mab_catalog_loaded_timestamp_seconds",
            "When the catalog being served was loaded (Unix time)",
            multiprocess_mode="mostrecent",
        )
        self._reloads = Counter("mab_catalog_reloads", "SIGHUP reloads", ["outcome"])
        for outcome in ("loaded", "unchanged", "rejected"):
            self._reloads.labels(outcome)

    def loaded(self, store: FeatureStore) -> None:
        self._arms.set(int(store.health().detail.get("arms", 0)))
        self._loaded.set(time.time())

    def reload(self, outcome: str) -> None:
        self._reloads.labels(outcome).inc()


FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class FeedbackMetrics:
    """The online-learning metrics of one worker, buffered and flushed like `Metrics`."""

    def __init__(self, arms: Callable[[], int]) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._arms = arms
        self._applied_total = Counter("mab_feedback_events", "Feedback events applied")
        self._duplicates_total = Counter(
            "mab_feedback_duplicates", "Feedback events not applied again: their event_id was"
        )
        self._new_arms_total = Counter("mab_feedback_new_arms", "Arms added by feedback")
        self._arms_gauge = Gauge("mab_arms", "Arms in the live table", multiprocess_mode="max")
        self._fsync = _Buffered(
            Histogram(
                "mab_journal_fsync_seconds",
                "Group-commit fsyncs of the journal",
                buckets=FSYNC_BUCKETS,
            ),
            FSYNC_BUCKETS,
        )
        self._reset()

    def _reset(self) -> None:
        self._applied = self._duplicates = self._new_arms = 0

    def applied(self, result: Applied) -> None:
        self._applied += result.applied
        self._duplicates += result.duplicates
        self._new_arms += result.new_arms

    def fsynced(self, seconds: float, records: int) -> None:
        self._fsync.observe(seconds)

    def flush(self) -> None:
        for total, count in (
            (self._applied_total, self._applied),
            (self._duplicates_total, self._duplicates),
            (self._new_arms_total, self._new_arms),
        ):
            if count:
                total.inc(count)
        self._fsync.flush()
        self._arms_gauge.set(self._arms())
        self._reset()
