"""The fused native path of the embedded store answers exactly what the stages do."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from mab.catalog import Catalog
from mab.config import Config
from mab.predict import Predictor
from mab.request import parse_request
from mab.sampling import SamplerPool
from mab.store.embedded import EmbeddedStore

IDS = [f"arm_{i}" for i in range(2000)]


def _predictor() -> Predictor:
    rng = np.random.default_rng(3)
    successes = rng.integers(0, 500, len(IDS)).astype(float).tolist()
    failures = rng.integers(0, 5000, len(IDS)).astype(float).tolist()
    store = EmbeddedStore(Catalog.from_columns(IDS, successes, failures, "test"))
    config = Config(prior_alpha=2.0, prior_beta=3.0)
    return Predictor(config, store, SamplerPool(config))


@pytest.mark.parametrize("top_k", [None, 1, 7, 5000])
@pytest.mark.parametrize("n", [1, 400, 3000])
def test_fused_and_staged_answers_match(n: int, top_k: int | None) -> None:
    """Seeded requests, unknown ids and top_k included: byte-identical bodies, same counts."""
    predictor = _predictor()
    items = [IDS[(i * 7) % len(IDS)] if i % 10 else f"new_{i}" for i in range(n)]
    body = json.dumps({"user_id": "u", "items": items, "top_k": top_k, "seed": 11}).encode()
    request = parse_request(body, 10_000)
    assert request.items.spans is not None  # the fast path, which the fused call needs
    fused = predictor.predict(request)
    staged = predictor._predict_in_stages(request)
    fused_result, staged_result = asyncio.run(fused), asyncio.run(staged)
    assert fused_result.body == staged_result.body
    assert fused_result.unknown == staged_result.unknown == len([i for i in items if i[0] == "n"])
    answer = json.loads(fused_result.body)
    assert len(answer["items"]) == min(n, top_k or n)
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)


def test_unseeded_fused_draws_follow_the_counts() -> None:
    """Without a seed the fused path draws afresh, from the right Beta per item."""
    predictor = _predictor()
    body = json.dumps({"items": [IDS[0]] * 4000}).encode()
    request = parse_request(body, 10_000)
    first = asyncio.run(predictor.predict(request))
    second = asyncio.run(predictor.predict(request))
    assert first.body != second.body
    scores = np.array([item["score"] for item in json.loads(first.body)["items"]])
    store = predictor._store
    assert isinstance(store, EmbeddedStore)
    a = 2.0 + store.catalog.successes[0]
    b = 3.0 + store.catalog.failures[0]
    mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(scores.mean() - mean) < 4 * sd / np.sqrt(len(scores))


def test_queue_time_is_the_wait_for_the_inline_lane() -> None:
    """Concurrent requests take turns on the loop: the first runs at once, one that
    waited for the lane says so in queue_s (logged as queue_ms)."""
    predictor = _predictor()
    body = json.dumps({"items": IDS[:2000] * 3}).encode()  # ~0.5 ms of work each
    request = parse_request(body, 10_000)

    async def burst() -> list[float]:
        results = await asyncio.gather(*(predictor.predict(request) for _ in range(6)))
        return [result.queue_s for result in results]

    waits = asyncio.run(burst())
    # The first runs at once; the last waited at least for the job before it.
    assert waits[-1] > max(0.0002, 10 * waits[0]), waits
