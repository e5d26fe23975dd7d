"""Where the CPU part of a /predict runs: on the event loop, or on sampler actors.

One runner per worker, picked once from the config (`build_runner`). Inline, the
work goes through the worker's `InlineLane`, in arrival order. Actors are OS threads,
each with its own `Scorer` (draw stream and scratch), running the native pipeline
with the GIL released: for requests over `--inline-max` items, when a configuration
makes such requests possible at all. A thread hand-off costs more than the work of
a request up to the default `--max-items` (bench/RESULTS.md, section 2), so by
default no thread starts.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from mab.config import Config
from mab.errors import Overloaded
from mab.lane import InlineLane
from mab.native.scoring import Scorer

T = TypeVar("T")
# A job: the thread's Scorer first, then its own arguments.
Job = Callable[..., T]


class Runner(Protocol):
    def run(self, items: int, job: Job[T], *args: Any) -> Awaitable[T]:
        """`job(scorer, *args)` where it belongs for a request of `items` ids."""
        ...

    def admits(self) -> bool:
        """Whether a new request can expect its CPU within --shed-delay."""
        ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class InlineRunner:
    """Every job on the event loop thread, through the lane."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.perf_counter) -> None:
        self._lane = InlineLane(clock=clock, max_wait=config.max_wait, max_delay=config.shed_delay)
        self._scorer = Scorer(config.prior_alpha, config.prior_beta)

    def run(self, items: int, job: Job[T], *args: Any) -> Awaitable[T]:
        return self._lane.run(job, self._scorer, *args)

    def admits(self) -> bool:
        return self._lane.admits()

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return  # the request went away; its answer is dropped
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ActorRunner:
    """Jobs of up to `--inline-max` items inline; larger ones on `--samplers` threads,
    at most `--max-queue` of them waiting (then 503)."""

    def __init__(self, config: Config) -> None:
        self._inline = InlineRunner(config)
        self._inline_max = config.inline_max
        self._max_queue = config.max_queue
        self._actors = config.samplers
        self._prior = (config.prior_alpha, config.prior_beta)
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Job[Any], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pending = 0  # jobs queued or running; only touched on the loop thread
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, items: int, job: Job[T], *args: Any) -> Awaitable[T]:
        if items <= self._inline_max:
            return self._inline.run(items, job, *args)
        return self._on_actor(job, args)

    def admits(self) -> bool:
        return self._inline.admits()  # the threads' queue has --max-queue

    async def _on_actor(self, job: Job[T], args: tuple[Any, ...]) -> T:
        if self._pending >= self._max_queue:
            raise Overloaded(
                f"{self._pending} requests wait for a sampler thread, retry later", "queue"
            )
        assert self._loop is not None, "start() first"
        future: asyncio.Future[T] = self._loop.create_future()
        self._pending += 1
        future.add_done_callback(self._done)
        self._jobs.put((future, job, args))
        return await future

    def _done(self, _: asyncio.Future[Any]) -> None:
        self._pending -= 1

    def _serve(self) -> None:
        scorer = Scorer(*self._prior)
        loop = self._loop
        assert loop is not None
        while (work := self._jobs.get()) is not None:
            future, job, args = work
            result: Any = None
            error: BaseException | None = None
            try:
                result = job(scorer, *args)
            except BaseException as exc:  # handed to the awaiting request
                error = exc
            loop.call_soon_threadsafe(_resolve, future, result, error)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for n in range(self._actors):
            thread = threading.Thread(target=self._serve, name=f"sampler-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    @property
    def threads(self) -> int:
        return len(self._threads)


def build_runner(config: Config) -> Runner:
    """Actors only when a request can be larger than `--inline-max` items."""
    if config.inline_max >= config.max_items:
        return InlineRunner(config)
    return ActorRunner(config)
