"""The /predict pipeline: parse -> fetch features -> sample -> rank -> encode."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mab.config import Config
from mab.errors import BadRequest, InvalidJSON, TooManyItems
from mab.native.codec import RankedEncoder
from mab.sampling import SamplerPool
from mab.store.base import FeatureStore, FloatArray

_MAX_SEED = 2**64 - 1


@dataclass(frozen=True, slots=True)
class PredictRequest:
    user_id: str | None
    items: list[str]
    top_k: int | None
    seed: int | None


@dataclass(slots=True)
class Prediction:
    body: bytes
    items: int
    unknown: int
    fetch_s: float
    sample_s: float
    encode_s: float


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(body: bytes, max_items: int) -> PredictRequest:
    """Validate a /predict body; every problem is a 400 (or 413 for too many items)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    items = data.get("items")
    if not isinstance(items, list):
        raise BadRequest('"items" is required and must be a list of item ids')
    if not items:
        raise BadRequest('"items" must not be empty')
    if len(items) > max_items:
        raise TooManyItems(f'"items" has {len(items)} ids; the limit is {max_items}')
    try:
        "".join(items)  # the fastest all-strings check: 2.5 us for 400 ids, a loop costs 11
    except TypeError:
        position, item = next((p, i) for p, i in enumerate(items) if not isinstance(i, str))
        raise BadRequest(
            f'"items"[{position}] must be a string, got {type(item).__name__}'
        ) from None
    user_id = data.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise BadRequest('"user_id" must be a string')
    top_k = data.get("top_k")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise BadRequest('"top_k" must be an integer >= 1')
    seed = data.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= _MAX_SEED):
        raise BadRequest(f'"seed" must be an integer in [0, {_MAX_SEED}]')
    return PredictRequest(user_id, items, top_k, seed)


def rank(scores: FloatArray, top_k: int | None) -> npt.NDArray[np.intp]:
    """Indices of the highest scores, best first, cut to `top_k`."""
    n = len(scores)
    if top_k is not None and top_k < n:
        best = np.argpartition(-scores, top_k - 1)[:top_k]
        return best[np.argsort(-scores[best], kind="stable")]
    return np.argsort(-scores, kind="stable")


def encode(
    encoder: RankedEncoder,
    request: PredictRequest,
    scores: FloatArray,
    order: npt.NDArray[np.intp],
    unknown: int,
) -> bytes:
    """The response body; the ranked items come from native code (3-4x orjson on dicts)."""
    return b"".join(
        (
            b'{"user_id":',
            orjson.dumps(request.user_id),
            b',"items":',
            encoder.encode(request.items, scores, order),
            b',"unknown":%d}' % unknown,
        )
    )


class Predictor:
    """Runs the pipeline against one store and one sampler pool."""

    def __init__(self, config: Config, store: FeatureStore, samplers: SamplerPool) -> None:
        self._prior_alpha = config.prior_alpha
        self._prior_beta = config.prior_beta
        self._store = store
        self._samplers = samplers
        self._encoder = RankedEncoder()  # used on the event loop thread only

    async def predict(self, request: PredictRequest) -> Prediction:
        t0 = time.perf_counter()
        features = await self._store.fetch(request.items)
        t1 = time.perf_counter()
        alpha = features.successes + self._prior_alpha
        beta = features.failures + self._prior_beta
        scores = await self._samplers.sample(alpha, beta, request.seed)
        t2 = time.perf_counter()
        order = rank(scores, request.top_k)
        body = encode(self._encoder, request, scores, order, features.unknown)
        t3 = time.perf_counter()
        return Prediction(body, len(request.items), features.unknown, t1 - t0, t2 - t1, t3 - t2)
