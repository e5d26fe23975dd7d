"""The /predict pipeline: parse -> fetch features -> sample -> rank -> encode."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mab.config import Config
from mab.lane import InlineLane
from mab.native.codec import RankedEncoder, Rows, Spans, rank
from mab.request import PredictRequest
from mab.sampling import SamplerPool
from mab.store.base import Features, FeatureStore, FloatArray
from mab.store.embedded import EmbeddedStore

# A prediction's figures for its log line: items, unknown, then seconds spent
# waiting for the inline lane, fetching, sampling and encoding.
Figures = tuple[int, int, float, float, float, float]


@dataclass(slots=True)
class Prediction:
    body: bytes | bytearray
    items: int
    unknown: int
    fetch_s: float
    sample_s: float
    encode_s: float
    queue_s: float = 0.0  # waiting for the inline lane

    def figures(self) -> Figures:
        """What the log line needs, without the body (a log line waiting to be
        rendered should not keep a 200 KB answer alive)."""
        return (self.items, self.unknown, self.queue_s, self.fetch_s, self.sample_s, self.encode_s)


def encode(
    encoder: RankedEncoder,
    request: PredictRequest,
    scores: FloatArray,
    order: Rows,
    unknown: int,
) -> bytes:
    """The response body; the ranked items come from native code (3-4x orjson on dicts)."""
    items = request.items
    if items.spans is not None:  # the fast path: ids copied from the request body
        ranked = encoder.encode_spans(items.body, items.spans, scores, order)
    else:
        ranked = encoder.encode(items.strings(), scores, order)
    return response_body(request, ranked, unknown)


def response_body(request: PredictRequest, ranked_items: bytes, unknown: int) -> bytes:
    """The /predict body around the ranked items array."""
    return b"".join((response_head(request), ranked_items, response_tail(unknown)))


def response_head(request: PredictRequest) -> bytes:
    return b'{"user_id":' + request.user_id_json + b',"items":'


def response_tail(unknown: int) -> bytes:
    return b',"unknown":%d}' % unknown


class Predictor:
    """Runs the pipeline against one store and one sampler pool.

    With the embedded store, fast-path requests sampled inline take one native call
    (`EmbeddedScorer`) that does the same steps with the same results (seeded draws
    are keyed either way): at 400 ids the server went from 1.32x to 1.61x the Go
    peer's requests/s (bench/RESULTS.md). Everything else takes the stages below.

    The part of a request that runs on the event loop thread (the fused call, or
    inline sampling, rank and encode) goes through the worker's `InlineLane`: in
    arrival order, about a loop turn's worth at a time.
    """

    def __init__(self, config: Config, store: FeatureStore, samplers: SamplerPool) -> None:
        self._prior_alpha = config.prior_alpha
        self._prior_beta = config.prior_beta
        self._store = store
        self._samplers = samplers
        self._encoder = RankedEncoder()  # used on the event loop thread only
        self._inline_max = config.inline_max
        self._lane = InlineLane()
        self._scorer = (
            store.scorer(config.prior_alpha, config.prior_beta)
            if isinstance(store, EmbeddedStore)
            else None
        )

    async def predict(self, request: PredictRequest) -> Prediction:
        items = request.items
        if self._scorer is not None and items.spans is not None and len(items) <= self._inline_max:
            queued = time.perf_counter()
            return await self._lane.run(self._score_fused, request, items.body, items.spans, queued)
        return await self._predict_in_stages(request)

    def _score_fused(
        self, request: PredictRequest, body: bytes, spans: Spans, queued: float
    ) -> Prediction:
        assert self._scorer is not None
        queue_s = time.perf_counter() - queued
        response, unknown, fetch_s, sample_s, encode_s = self._scorer.score(
            body, spans, request.top_k, request.seed, head=response_head(request)
        )
        response += response_tail(unknown)
        items = len(spans) // 2
        return Prediction(response, items, unknown, fetch_s, sample_s, encode_s, queue_s)

    async def _predict_in_stages(self, request: PredictRequest) -> Prediction:
        t0 = time.perf_counter()
        features = await self._store.fetch(request.items)
        t1 = time.perf_counter()
        if len(request.items) <= self._inline_max:
            return await self._lane.run(self._finish_inline, request, features, t1 - t0, t1)
        alpha = features.successes + self._prior_alpha
        beta = features.failures + self._prior_beta
        scores = await self._samplers.sample(alpha, beta, request.seed)  # on the actors
        t2 = time.perf_counter()
        return self._finish(request, features, scores, t1 - t0, t2 - t1)

    def _finish_inline(
        self, request: PredictRequest, features: Features, fetch_s: float, queued: float
    ) -> Prediction:
        started = time.perf_counter()
        alpha = features.successes + self._prior_alpha
        beta = features.failures + self._prior_beta
        scores = self._samplers.sample_inline(alpha, beta, request.seed)
        sample_s = time.perf_counter() - started
        return self._finish(request, features, scores, fetch_s, sample_s, started - queued)

    def _finish(
        self,
        request: PredictRequest,
        features: Features,
        scores: FloatArray,
        fetch_s: float,
        sample_s: float,
        queue_s: float = 0.0,
    ) -> Prediction:
        """Rank and encode."""
        started = time.perf_counter()
        order = rank(scores, request.top_k)
        body = encode(self._encoder, request, scores, order, features.unknown)
        encode_s = time.perf_counter() - started
        items, unknown = len(request.items), features.unknown
        return Prediction(body, items, unknown, fetch_s, sample_s, encode_s, queue_s)
