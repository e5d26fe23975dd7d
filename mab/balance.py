"""Keeps the workers evenly loaded by moving keep-alive connections between them.

Each worker accepts on its own SO_REUSEPORT socket and the kernel hashes new
connections over the sockets: under wrk's 64 connections one run split them 45/19,
and a connection stays where it landed. Equal counts are not equal load either:
a worker sharing its core with a busy client got ~75% of it where the other got
~92%. Either way one worker's requests wait longer, and that worker sets the p99.

So every WINDOW_S each worker publishes, on a board shared by the processes, the
mean time its /predict requests took (queueing on its event loop included) and
its open connections. A worker whose mean is over the least loaded worker's by
REL_MARGIN and by ABS_MARGIN_S answers the next few requests with `Connection:
close`. HTTP clients reconnect on that as a matter of course, no request fails,
and the kernel hashes the new connection afresh: with two workers, half the moves
land on the other one, and the next windows repeat until the means are even.

Not kept: steering the reconnects with a reuseport BPF program. A burst of new
connections inside a steering window all went to one worker (64/0 when wrk
restarted), which took seconds to undo. bench/RESULTS.md has the numbers.
"""

from __future__ import annotations

import asyncio
import mmap
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

WINDOW_S = 0.2
REL_MARGIN = 0.15  # a mean this much over the least loaded worker's is imbalance...
ABS_MARGIN_S = 0.00025  # ...when also this far over it (no moves for noise at light load)
MAX_MOVES = 4  # connections closed per window
SETTLE_S = 2 * WINDOW_S  # after closing some, wait for means that include the reconnects
_FIELDS = 3  # per slot: mean seconds, open connections, when written (monotonic)


class LoadBoard:
    """Each worker's recent load, in memory shared by all the processes: an
    anonymous shared mapping made by the supervisor before it forks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, 8 * _FIELDS * workers)
        self._values = memoryview(self._map).cast("d")

    def publish(self, slot: int, mean_s: float, connections: int) -> None:
        base = _FIELDS * slot
        self._values[base] = mean_s
        self._values[base + 1] = connections
        self._values[base + 2] = time.monotonic()

    def retire(self, slot: int) -> None:
        """Leave a stopping worker out of the comparison."""
        self._values[_FIELDS * slot + 2] = 0.0

    def least_loaded(self, fresh_after: float) -> tuple[int, float, int] | None:
        """(slot, mean seconds, connections) of the least loaded worker among those
        that published after `fresh_after` (a dead worker's entry goes stale)."""
        best: tuple[int, float, int] | None = None
        for slot in range(self.workers):
            base = _FIELDS * slot
            if self._values[base + 2] > fresh_after:
                mean = self._values[base]
                if best is None or mean < best[1]:
                    best = (slot, mean, int(self._values[base + 1]))
        return best


def connections_to_move(mine: float, conns: int, least: float, least_conns: int) -> int:
    """How many of this worker's `conns` connections should go to the least loaded
    worker, whose mean is `least` over `least_conns` connections.

    A worker's mean is about its connections over its throughput, so moving m
    evens the two when (conns - m) * mine / conns = (least_conns + m) * least /
    least_conns. Half of that (the means are noisy, and only half of the
    reconnects land on the other worker anyway), at least 1, at most MAX_MOVES.
    """
    if conns < 2:
        return 0
    if least_conns < 1 or least <= 0.0:  # an idle worker: its throughput is unknown
        return 1
    even = conns * least_conns * (mine - least) / (least_conns * mine + conns * least)
    return max(1, min(MAX_MOVES, round(even / 2)))


class Balancer(Protocol):
    def observe(self, seconds: float) -> None:
        """One /predict request took `seconds`."""

    def close_next(self) -> bool:
        """Whether this response should ask its client to reconnect."""

    async def run(self, connections: Callable[[], int]) -> None:
        """Publish and decide every window, until cancelled."""

    def retire(self) -> None:
        """The worker is stopping."""


class NoBalancer:
    """One worker, one shared socket, or `--no-rebalance`: nothing to balance."""

    def observe(self, seconds: float) -> None:
        pass

    def close_next(self) -> bool:
        return False

    async def run(self, connections: Callable[[], int]) -> None:
        pass

    def retire(self) -> None:
        pass


class ConnectionBalancer:
    """One worker's side of the balancing; lives on its event loop thread."""

    def __init__(self, board: LoadBoard, slot: int) -> None:
        self._board = board
        self._slot = slot
        self._sum = 0.0
        self._count = 0
        self._to_close = 0
        self._quiet_until = 0.0
        self._clock = time.monotonic
        self._log: Any = structlog.get_logger("mab.balance")

    def observe(self, seconds: float) -> None:
        self._sum += seconds
        self._count += 1

    def close_next(self) -> bool:
        if self._to_close:
            self._to_close -= 1
            return True
        return False

    async def run(self, connections: Callable[[], int]) -> None:
        while True:
            await asyncio.sleep(WINDOW_S)
            self.tick(connections())

    def retire(self) -> None:
        self._board.retire(self._slot)

    def tick(self, conns: int) -> None:
        """End a window: publish this worker's mean, and if it is the busy one,
        close a few connections."""
        now = self._clock()
        mine = self._sum / self._count if self._count else 0.0
        self._sum, self._count = 0.0, 0
        self._to_close = 0  # what was not closed in time is decided afresh
        self._board.publish(self._slot, mine, conns)
        if now < self._quiet_until:
            return
        least = self._board.least_loaded(fresh_after=now - 3 * WINDOW_S)
        if least is None or least[0] == self._slot:
            return
        slot, least_mean, least_conns = least
        if mine - least_mean < max(ABS_MARGIN_S, REL_MARGIN * least_mean):
            return
        self._to_close = connections_to_move(mine, conns, least_mean, least_conns)
        if self._to_close:
            self._quiet_until = now + SETTLE_S
            self._log.debug(
                "closing connections to even the load",
                connections=self._to_close,
                mean_ms=round(mine * 1e3, 2),
                open=conns,
                least_loaded_worker=slot,
                their_mean_ms=round(least_mean * 1e3, 2),
                their_open=least_conns,
            )
