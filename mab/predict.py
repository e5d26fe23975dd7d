"""The /predict pipeline, top to bottom: parse -> fetch counts -> sample -> rank -> encode.

1. parse: `parse_request` gives one request shape whatever the body: ids as spans
   into a buffer (mab/request.py).
2. fetch counts: the store's scorer, built once per worker (`FeatureStore.scorer`):
   - `TableScore` (embedded store, Redis mirror): the counts are in the arm table,
     looked up natively inside step 3's call;
   - `FetchScore` (Vertex): awaits `store.fetch` for counts aligned with the ids.
3. sample, rank, encode: one native call, `Scorer.score_table` or
   `Scorer.score_counts` (mab/native/scoring.py -> pipeline.cpp), run where the
   worker's runner puts it (mab/runner.py): the event loop's lane, or a sampler actor.
4. frame: the answer's head goes in first and the tail after, in the same buffer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mab.native.scoring import Scorer
from mab.request import PredictRequest, parse_request
from mab.runner import Runner
from mab.state.table import ArmTable
from mab.store.base import Features

# A prediction's figures for its log line: items, unknown, then seconds spent
# waiting for the lane or an actor, fetching, sampling and encoding.
Figures = tuple[int, int, float, float, float, float]


@dataclass(slots=True)
class Prediction:
    body: bytearray
    items: int
    unknown: int
    fetch_s: float
    sample_s: float
    encode_s: float
    queue_s: float

    def figures(self) -> Figures:
        """What the log line needs, without the body (a log line waiting to be
        rendered should not keep a 200 KB answer alive)."""
        return (self.items, self.unknown, self.queue_s, self.fetch_s, self.sample_s, self.encode_s)


class Score(Protocol):
    """Steps 2 and 3 for one store: a request in, its answer out."""

    async def __call__(self, request: PredictRequest) -> Prediction: ...


class Pipeline:
    """Steps 1 to 4 against one store, with one runner; one per worker."""

    def __init__(self, score: Score, max_items: int) -> None:
        self._score = score
        self._max_items = max_items

    async def predict(self, body: bytes) -> Prediction:
        request = parse_request(body, self._max_items)  # 1. parse
        return await self._score(request)  # 2-4. fetch counts, sample, rank, encode, frame


def response_head(request: PredictRequest) -> bytes:
    return b'{"user_id":' + request.user_id_json + b',"items":'


def response_tail(unknown: int) -> bytes:
    return b',"unknown":%d}' % unknown


class TableScore:
    """Counts from the live arm table (mab/state/table.py): steps 2 and 3 in one call."""

    def __init__(
        self,
        table: ArmTable,
        runner: Runner,
        now: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._table = table.native
        self._runner = runner
        self._now = now  # the time the counts are decayed to (mab/clock.py)
        self._clock = clock

    async def __call__(self, request: PredictRequest) -> Prediction:
        queued = self._clock()
        return await self._runner.run(len(request.items), self._score, request, queued)

    def _score(self, scorer: Scorer, request: PredictRequest, queued: float) -> Prediction:
        started = self._clock()
        items = request.items
        body, stats = scorer.score_table(
            self._table,
            items.buffer,
            items.spans,
            request.k,
            request.seed,
            self._now(),
            head=response_head(request),
        )
        body += response_tail(stats.unknown)
        return Prediction(
            body,
            len(items),
            stats.unknown,
            stats.fetch_s,
            stats.sample_s,
            stats.encode_s,
            started - queued,
        )


class FetchScore:
    """Counts from a remote store: await them (step 2), then score them (step 3)."""

    def __init__(
        self, fetch: Callable[[Sequence[str]], Awaitable[Features]], runner: Runner
    ) -> None:
        self._fetch = fetch
        self._runner = runner

    async def __call__(self, request: PredictRequest) -> Prediction:
        started = time.perf_counter()
        features = await self._fetch(request.items)
        fetched = time.perf_counter()
        return await self._runner.run(
            len(request.items), self._score, request, features, fetched - started, fetched
        )

    def _score(
        self,
        scorer: Scorer,
        request: PredictRequest,
        features: Features,
        fetch_s: float,
        queued: float,
    ) -> Prediction:
        started = time.perf_counter()
        items = request.items
        body, stats = scorer.score_counts(
            features.successes,
            features.failures,
            features.unknown,
            items.buffer,
            items.spans,
            request.k,
            request.seed,
            head=response_head(request),
        )
        body += response_tail(stats.unknown)
        return Prediction(
            body,
            len(items),
            stats.unknown,
            fetch_s + stats.fetch_s,
            stats.sample_s,
            stats.encode_s,
            started - queued,
        )
