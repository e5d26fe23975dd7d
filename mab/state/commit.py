"""Group commit: concurrent callers of one process share one flush to disk.

Appends are numbered as they complete. A flush round notes the number of the last
completed append when it starts, runs its blocking work (an fsync) in a thread of its
own, and then releases every caller waiting for an append up to that number. A
caller whose append completed after a round started waits for the next round, which
starts as soon as the current one ends: while the disk is busy, arriving records
gather into the next flush.

One committer task per process drives the rounds; the event loop only awaits them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from mab.errors import JournalFailed

_log = structlog.get_logger("mab.journal")

# Called on the event loop after each successful flush: its duration in seconds and the
# number of appends it made durable (for a latency histogram, records per flush).
FlushHook = Callable[[float, int], None]

# Called on the event loop when a round starts; returns the blocking work to run in
# the flush thread.
StartRound = Callable[[], Callable[[], None]]


class GroupCommit:
    """The bookkeeping of appends and the flush rounds that make them durable. All
    methods run on the event loop's thread; only the work StartRound returns runs in
    the flush thread."""

    def __init__(self, start_round: StartRound, on_flush: FlushHook | None, name: str) -> None:
        self._start_round = start_round
        self._on_flush = on_flush
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._appended = 0  # appends completed so far
        self._durable = 0  # appends covered by a flush that has completed
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._committer: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self.flushes = 0
        self.flushed_records = 0

    @property
    def active(self) -> bool:
        """A round is running or about to start."""
        return self._committer is not None and not self._committer.done()

    def check(self) -> None:
        """Raise JournalFailed once a flush has failed: nothing after it is durable."""
        if self._failure is not None:
            raise JournalFailed(self._failure)

    def fail(self, reason: str) -> None:
        """Refuse everything from now on, and fail every waiter."""
        self._failure = reason
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(JournalFailed(reason))

    def appended(self) -> None:
        """Count one completed append."""
        self._appended += 1

    async def wait(self) -> None:
        """Return once a flush that started after the last completed append has
        completed; JournalFailed if a flush failed."""
        self.check()
        target = self._appended
        if target <= self._durable:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append((target, waiter))
        if not self.active:
            self._committer = loop.create_task(self._run())
        await waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            # A thread of its own: a flush never queues behind the default executor's work.
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        while self._waiters and self._failure is None:
            covers = self._appended
            work = self._start_round()
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, work)
            except Exception as exc:
                # After a failed fsync the kernel may have dropped the dirty pages and
                # marked them clean: a later fsync could succeed with the data gone.
                self.fail(f"journal flush failed: {exc!r}")
                return
            seconds = time.perf_counter() - started
            records = covers - self._durable
            self._durable = covers
            self.flushes += 1
            self.flushed_records += records
            while self._waiters and self._waiters[0][0] <= covers:
                _, waiter = self._waiters.popleft()
                if not waiter.done():  # a cancelled caller leaves a done future
                    waiter.set_result(None)
            if self._on_flush is not None:
                try:
                    self._on_flush(seconds, records)
                except Exception:  # a metrics hook must not stop the commits
                    _log.exception("journal_flush_hook_failed")

    def close(self) -> None:
        """Stop the flush thread; call when no round is running."""
        if self.active:
            raise RuntimeError("a flush is still running: await commit() before close()")
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
