"""Sampler actors: OS threads that draw Beta samples with the GIL released.

Each actor owns a `BetaSampler` (one PRNG stream per thread, no locks) and takes
jobs from one queue. A large request is cut into chunks that run on several actors
at once and are gathered, like Go's fan-out over goroutines. Small requests are
drawn inline on the event loop thread: a thread hand-off costs more than the draw
(see bench/RESULTS.md). Requests with a `seed` use counter-based keyed draws, so the
answer is the same however the request is chunked and whichever thread runs it.
"""

from __future__ import annotations

import asyncio
import queue
import threading

import numpy as np

from mab.config import Config
from mab.errors import Overloaded
from mab.native import BetaSampler, sample_keyed
from mab.store.base import FloatArray


class _Job:
    __slots__ = ("alpha", "beta", "future", "out", "seed", "start")

    def __init__(
        self,
        alpha: FloatArray,
        beta: FloatArray,
        out: FloatArray,
        seed: int | None,
        start: int,
        future: asyncio.Future[None],
    ) -> None:
        self.alpha, self.beta, self.out = alpha, beta, out
        self.seed, self.start, self.future = seed, start, future


def _draw(
    sampler: BetaSampler,
    alpha: FloatArray,
    beta: FloatArray,
    out: FloatArray,
    seed: int | None,
    start: int,
) -> None:
    if seed is None:
        sampler.sample(alpha, beta, out=out)
    else:
        sample_keyed(alpha, beta, seed, start, out=out)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.cancelled():
        return  # the request went away; its chunk was drawn into a buffer nobody reads
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class SamplerPool:
    def __init__(self, config: Config) -> None:
        self._actors = config.samplers
        self._chunk = config.chunk_size
        self._inline_max = config.inline_max
        self._max_queue = config.max_queue
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._inline = BetaSampler()
        self._pending = 0  # jobs queued or running; only touched on the loop thread
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for n in range(self._actors):
            thread = threading.Thread(target=self._run, name=f"sampler-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _run(self) -> None:
        sampler = BetaSampler()
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            error: BaseException | None = None
            try:
                _draw(sampler, job.alpha, job.beta, job.out, job.seed, job.start)
            except BaseException as exc:  # handed to the awaiting request
                error = exc
            loop.call_soon_threadsafe(_resolve, job.future, error)

    def _job_done(self, _: asyncio.Future[None]) -> None:
        self._pending -= 1

    def sample_inline(self, alpha: FloatArray, beta: FloatArray, seed: int | None) -> FloatArray:
        """One Beta(alpha[i], beta[i]) draw per item, on the calling (loop) thread."""
        out = np.empty(len(alpha), dtype=np.float64)
        _draw(self._inline, alpha, beta, out, seed, 0)
        return out

    async def sample(self, alpha: FloatArray, beta: FloatArray, seed: int | None) -> FloatArray:
        """One Beta(alpha[i], beta[i]) draw per item: inline up to `inline_max`
        items, else in chunks on the actors."""
        n = len(alpha)
        if n <= self._inline_max or not self._threads:
            return self.sample_inline(alpha, beta, seed)
        out = np.empty(n, dtype=np.float64)
        chunks = range(0, n, self._chunk)
        if self._pending + len(chunks) > self._max_queue:
            raise Overloaded("sampler queue is full, retry later")
        assert self._loop is not None
        futures = []
        for lo in chunks:
            hi = lo + self._chunk
            future: asyncio.Future[None] = self._loop.create_future()
            future.add_done_callback(self._job_done)
            self._pending += 1
            self._jobs.put(_Job(alpha[lo:hi], beta[lo:hi], out[lo:hi], seed, lo, future))
            futures.append(future)
        await asyncio.gather(*futures)
        return out
