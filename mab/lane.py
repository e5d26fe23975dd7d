"""The inline lane: CPU work on the event loop thread, oldest request first, a
bounded slice of it per loop turn.

Without it, one loop turn reads every request that has arrived and the next runs
them all back to back: at 4,000 ids that is ~30 requests, ~15 ms, with no socket
read in between. The requests that arrive meanwhile are read at the next poll in
epoll's order, which puts a connection that missed a poll behind the ones that did
not, turn after turn: wrk saw a few connections starved at 2x the median latency
(p99 1.7x the mean with one worker). Taking one turn's worth of work at a time, in
arrival order, lets the loop poll between requests and serve connections in the
order they asked (bench/RESULTS.md, section 0b).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# CPU time of inline jobs per loop turn before the loop polls its sockets again:
# 3-4 requests of 4,000 ids, ~30 of 400. Measured against 0.2 ms (one job a turn:
# 5% fewer requests/s, the turns cost that much), 0.5, 2 and 3 ms (the tail grows
# back): bench/RESULTS.md, section 0b.
TURN_BUDGET_S = 0.001


class _Job:
    __slots__ = ("args", "fn", "future")

    def __init__(self, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]):
        self.future, self.fn, self.args = future, fn, args


class InlineLane:
    """Runs `fn(*args)` on the loop thread in the order `run` is called, with at
    most about `budget_s` of such work per loop turn. One lane per event loop."""

    def __init__(self, budget_s: float = TURN_BUDGET_S) -> None:
        self._budget = budget_s
        self._jobs: deque[_Job] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spent: float | None = None  # work done this turn; None: none yet
        self._clock = time.perf_counter

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` now if this turn has room and nothing waits, else in a later
        turn, after the requests that came first. Exceptions reach the caller."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): start afresh
            self._loop, self._spent = loop, None
            self._jobs.clear()
        if not self._jobs and (self._spent is None or self._spent < self._budget):
            return self._run_now(fn, args)
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.append(_Job(future, fn, args))
        return await future

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
        while jobs and (self._spent is None or self._spent < self._budget):
            job = jobs.popleft()
            if job.future.cancelled():  # its request went away while it waited
                continue
            try:
                result = self._run_now(job.fn, job.args)
            except BaseException as exc:  # handed to the waiting request
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
