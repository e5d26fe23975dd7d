"""The inline lane: loop-thread work in arrival order, about a turn's budget at a time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from mab.errors import Overloaded
from mab.lane import MIN_BACKLOG, InlineLane


class FakeClock:
    """The lane's clock, moved only by the jobs: a job 'works' by advancing it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


CLOCK = FakeClock()
_busy = CLOCK.work


def _lane(budget_s: float) -> InlineLane:
    return InlineLane(budget_s=budget_s, clock=CLOCK)


def _turn_counter(loop: asyncio.AbstractEventLoop) -> Callable[[], int]:
    """A callback that re-schedules itself: it runs once per loop turn, so its
    count tells which turn the loop is in."""
    turns = [0]

    def tick() -> None:
        turns[0] += 1
        loop.call_soon(tick)

    loop.call_soon(tick)
    return lambda: turns[0]


def test_jobs_run_in_arrival_order_one_budget_per_turn() -> None:
    """Jobs of 3 ms with a 1 ms budget: each runs in its own loop turn (the loop gets
    to poll in between), and they finish in the order they were submitted."""

    async def main() -> list[tuple[int, int]]:
        lane = _lane(0.001)
        turn = _turn_counter(asyncio.get_running_loop())
        ran: list[tuple[int, int]] = []

        def job(i: int) -> int:
            ran.append((i, turn()))
            _busy(0.003)
            return i

        results = await asyncio.gather(*(lane.run(job, i) for i in range(6)))
        assert results == list(range(6))
        return ran

    ran = asyncio.run(main())
    assert [i for i, _ in ran] == list(range(6))
    turns = [t for _, t in ran]
    assert all(b > a for a, b in itertools.pairwise(turns)), turns


def test_small_jobs_share_a_turn() -> None:
    """Jobs far under the budget run back to back in one turn, without a hop each."""

    async def main() -> list[int]:
        lane = _lane(0.05)
        turn = _turn_counter(asyncio.get_running_loop())
        turns: list[int] = []
        await asyncio.gather(*(lane.run(lambda: turns.append(turn())) for _ in range(20)))
        return turns

    turns = asyncio.run(main())
    assert len(turns) == 20 and len(set(turns)) == 1, turns


def test_an_idle_lane_runs_a_job_at_once() -> None:
    """With nothing waiting, `run` does the work before it returns to the loop."""

    async def main() -> None:
        lane = _lane(0.001)
        turn = _turn_counter(asyncio.get_running_loop())
        await asyncio.sleep(0)
        before = turn()
        assert await lane.run(turn) == before

    asyncio.run(main())


def test_an_error_reaches_its_caller_and_the_lane_goes_on() -> None:
    """A job that raises fails only its own caller; the jobs behind it still run."""

    def fail() -> None:
        _busy(0.002)
        raise ValueError("bad job")

    async def main() -> list[object]:
        lane = _lane(0.001)
        calls = [lane.run(_busy, 0.002), lane.run(fail), lane.run(lambda: "after")]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert first is None
    assert isinstance(second, ValueError) and str(second) == "bad job"
    assert third == "after"


def test_a_cancelled_waiting_job_never_runs() -> None:
    """A request that goes away while its job waits costs no work."""

    async def main() -> list[str]:
        lane = _lane(0.001)
        ran: list[str] = []
        first = lane.run(lambda: (ran.append("first"), _busy(0.002)))
        waiting = lane.run(ran.append, "cancelled")
        last = lane.run(ran.append, "last")
        assert lane.waiting == 2  # the first job filled this turn; the others queue
        waiting.cancel()
        await asyncio.gather(first, last)
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return ran

    assert asyncio.run(main()) == ["first", "last"]


def test_a_lane_outlives_its_loop() -> None:
    """A lane left mid-turn by a loop that stopped works on the next loop (tests and
    tools call the predictor from several asyncio.run calls)."""
    lane = _lane(0.001)

    async def fill_the_last_turn() -> None:
        asyncio.get_running_loop().stop()  # this turn is the loop's last
        await lane.run(_busy, 0.003)  # fills it; the lane's next turn never comes

    first = asyncio.new_event_loop()
    first.run_until_complete(fill_the_last_turn())
    first.close()

    async def again() -> str:
        return await asyncio.wait_for(lane.run(lambda: "ok"), 1.0)

    assert asyncio.run(again()) == "ok"


def test_jobs_that_waited_past_max_wait_are_shed() -> None:
    """Jobs of 0.4 s with --max-wait 1 s (injected clock): the first runs at once and
    the others queue behind it; those that start within 1 s of queueing run (waits
    0, 0.4, 0.8 s), the two that would wait 1.2 s get Overloaded (reason delay),
    are counted, and never run."""

    async def main() -> tuple[list[int], list[object], int]:
        lane = InlineLane(budget_s=0.001, clock=CLOCK, max_wait=1.0)
        ran: list[int] = []

        def job(i: int) -> int:
            ran.append(i)
            _busy(0.4)
            return i

        results = await asyncio.gather(
            *(lane.run(job, i) for i in range(6)), return_exceptions=True
        )
        return ran, results, lane.shed

    ran, results, shed = asyncio.run(main())
    assert ran == [0, 1, 2, 3]
    assert results[:4] == [0, 1, 2, 3]
    for error in results[4:]:
        assert isinstance(error, Overloaded) and error.reason == "delay", error
    assert shed == 2


def test_admission_follows_the_measured_drain_rate() -> None:
    """Jobs of 1 ms each (injected clock), one per turn: once the lane has had a queue
    for RATE_WINDOW_S it knows it drains ~1,000 jobs a second, so with --shed-delay
    0.1 s it admits while fewer than ~100 wait, and refuses past that. Up to
    MIN_BACKLOG may always wait, and --shed-delay 0 never refuses."""

    async def main() -> tuple[list[bool], list[bool], bool]:
        lane = InlineLane(budget_s=0.001, clock=CLOCK, max_delay=0.1)
        off = InlineLane(budget_s=0.001, clock=CLOCK, max_delay=0.0)
        jobs = [lane.run(_busy, 0.001) for _ in range(300)]
        for _ in range(300):
            off.run(_busy, 0.0)
        before = [lane.admits(), off.admits()]
        await asyncio.gather(*jobs[:150])  # 150 turns with a queue: the rate is known
        measured = [lane.admits()]  # 150 wait
        await asyncio.gather(*jobs[:201])
        measured.append(lane.admits())  # 99 wait
        await asyncio.gather(*jobs)
        return before, measured, off.admits()

    before, measured, off = asyncio.run(main())
    assert before == [False, True]  # 299 waiting, no rate yet: over MIN_BACKLOG
    assert measured == [False, True]  # 150 > ~100 > 99
    assert off


def test_min_backlog_is_always_admitted() -> None:
    """However slow the lane, MIN_BACKLOG jobs may wait before one is refused."""

    async def main() -> list[bool]:
        lane = InlineLane(budget_s=0.001, clock=CLOCK, max_delay=1e-9)
        lane.run(_busy, 0.002)  # fills the turn: the rest queue
        answers = []
        for _ in range(MIN_BACKLOG + 1):
            answers.append(lane.admits())
            lane.run(_busy, 0.0)
        return answers

    answers = asyncio.run(main())
    assert answers == [True] * MIN_BACKLOG + [False]
