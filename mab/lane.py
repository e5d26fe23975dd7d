"""The inline lane: CPU work on the event loop thread, oldest request first, a
bounded slice of it per loop turn.

Run back to back in one turn, a burst of 4,000-id requests keeps the loop from
reading its sockets for many milliseconds, and the connections that missed a poll
fall behind the others turn after turn. Taking one turn's worth of work at a time,
in arrival order, lets the loop poll between requests and serve connections in the
order they asked (bench/RESULTS.md, section 0b, has the tail it cut).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from mab.errors import Overloaded

T = TypeVar("T")

# CPU time of inline jobs per loop turn before the loop polls its sockets again;
# chosen against 0.2 to 3 ms (bench/RESULTS.md, section 0b).
TURN_BUDGET_S = 0.001
# How long the lane must have had a queue to measure the rate it drains it at.
RATE_WINDOW_S = 0.1
# Jobs that may always wait: a worker with at most this many connections never sheds.
MIN_BACKLOG = 64


class _Job:
    __slots__ = ("args", "fn", "future", "queued")

    def __init__(
        self,
        future: asyncio.Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        queued: float,
    ):
        self.future, self.fn, self.args, self.queued = future, fn, args, queued


class InlineLane:
    """Runs `fn(*args)` on the loop thread in the order `run` is called, with at
    most about `budget_s` of such work per loop turn. One lane per event loop."""

    def __init__(
        self,
        budget_s: float = TURN_BUDGET_S,
        clock: Callable[[], float] = time.perf_counter,
        max_wait: float = math.inf,
        max_delay: float = 0.0,
    ) -> None:
        self._budget = budget_s
        self._jobs: deque[_Job] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spent: float | None = None  # work done this turn; None: none yet
        self._clock = clock
        # A job that has waited this long is answered Overloaded instead of run: a
        # bound on the queue in time, whatever the connections (--max-wait).
        self._max_wait = max_wait
        self.shed = 0  # jobs answered Overloaded for their wait
        # Admission (`admits`): the expected wait of a new job, the jobs ahead of it
        # over the rate the lane drains its queue, against --shed-delay.
        self._max_delay = max_delay
        self._rate = 0.0  # jobs per second, measured while there was a queue
        self._queued_turn: float | None = None  # when the last turn began with a queue
        self._busy = 0.0  # loop time between turns that began with a queue
        self._drained = 0  # jobs run in those turns

    def admits(self) -> bool:
        """Whether a new job can expect to start within --shed-delay (always, when
        that is 0): fewer jobs wait than the lane runs in that time."""
        waiting = len(self._jobs)
        return (
            waiting < MIN_BACKLOG or not self._max_delay or waiting < self._rate * self._max_delay
        )

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` now if this turn has room and nothing waits, else in a later
        turn, after the requests that came first. Its outcome comes in the future,
        done already when it ran now: a caller may take it without a loop turn."""
        loop = self._loop
        # First use, or a new loop (tests): start afresh. is_running(), not
        # get_running_loop(), which makes a getpid() system call each time.
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
            self._spent = None
            self._jobs.clear()
        future: asyncio.Future[T] = loop.create_future()
        if not self._jobs and (self._spent is None or self._spent < self._budget):
            try:
                future.set_result(self._run_now(fn, args))
            except Exception as exc:  # handed to the caller
                future.set_exception(exc)
        else:
            self._jobs.append(_Job(future, fn, args, self._clock()))
        return future

    @property
    def waiting(self) -> int:
        """Jobs queued for a later turn."""
        return len(self._jobs)

    def _run_now(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._spent is None:  # the first job of this turn: open the next one
            self._spent = 0.0
            assert self._loop is not None
            self._loop.call_soon(self._next_turn)
        started = self._clock()
        try:
            return fn(*args)
        finally:
            self._spent += self._clock() - started

    def _next_turn(self) -> None:
        """A new loop turn (the loop has polled its sockets since the last one):
        run the oldest waiting jobs within the budget."""
        self._spent = None
        jobs = self._jobs
        if not jobs:
            if self._queued_turn is not None:  # the queue emptied in the last turn
                self._busy += self._clock() - self._queued_turn
                self._queued_turn = None
            return
        now = self._clock()
        self._measure(now)
        while jobs and now - jobs[0].queued >= self._max_wait:
            self._shed(jobs.popleft(), now)
        while jobs and (self._spent is None or self._spent < self._budget):
            job = jobs.popleft()
            if job.future.cancelled():  # its request went away while it waited
                continue
            self._drained += 1
            try:
                result = self._run_now(job.fn, job.args)
            except BaseException as exc:  # handed to the waiting request
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def _measure(self, now: float) -> None:
        """The drain rate: jobs run per second of loop time between turns that began
        with a queue (so the time the loop spends on its sockets counts), averaged
        over RATE_WINDOW_S of such time."""
        if self._queued_turn is not None:
            self._busy += now - self._queued_turn
            if self._busy >= RATE_WINDOW_S:
                rate = self._drained / self._busy
                self._rate = rate if not self._rate else (self._rate + rate) / 2
                self._busy, self._drained = 0.0, 0
        self._queued_turn = now

    def _shed(self, job: _Job, now: float) -> None:
        if not job.future.cancelled():
            waited = now - job.queued
            job.future.set_exception(
                Overloaded(
                    f"waited {waited:.3f} s for the CPU, over the limit; retry later", "delay"
                )
            )
            self.shed += 1
