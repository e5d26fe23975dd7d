"""The pipeline: the table and the fetched-counts paths, and the native code and its
twin, answer seeded requests with the same bytes; queue time is the wait for the lane."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence

import numpy as np
import pytest

from mab.catalog import Catalog
from mab.config import Config
from mab.native import gate, twin
from mab.native.scoring import literal_key
from mab.predict import FetchScore, Pipeline, Prediction, TableScore
from mab.request import parse_request
from mab.runner import InlineRunner
from mab.state.table import ArmTable
from mab.store.base import Features

IDS = [f"arm_{i}" for i in range(2000)]
CONFIG = Config(prior_alpha=2.0, prior_beta=3.0)


def _catalog() -> Catalog:
    rng = np.random.default_rng(3)
    successes = rng.integers(0, 500, len(IDS)).astype(float).tolist()
    failures = rng.integers(0, 5000, len(IDS)).astype(float).tolist()
    return Catalog.from_columns(IDS, successes, failures, "test")


def _table(catalog: Catalog, half_life: float = 0.0) -> ArmTable:
    return ArmTable(
        catalog.ids,
        catalog.counts,
        max_arms=len(catalog) + 100,
        dedupe_capacity=10,
        half_life=half_life,
        t0=0.0,
        updated=0.0,
    )


def _table_pipeline(catalog: Catalog) -> Pipeline:
    score = TableScore(_table(catalog), InlineRunner(CONFIG), now=lambda: 0.0)
    return Pipeline(score, max_items=10_000)


def _fetch_pipeline(catalog: Catalog) -> Pipeline:
    rows = {arm: row for row, arm in enumerate(catalog.ids)}

    async def fetch(ids: Sequence[str]) -> Features:
        found = [rows.get(arm, len(catalog)) for arm in ids]
        counts = catalog.counts[found]
        unknown = sum(row == len(catalog) for row in found)
        return Features(counts[:, 0].copy(), counts[:, 1].copy(), unknown)

    return Pipeline(FetchScore(fetch, InlineRunner(CONFIG)), max_items=10_000)


def _predict(pipeline: Pipeline, body: bytes) -> Prediction:
    """One prediction in a loop of its own (the pipeline runs inside a running loop)."""

    async def predict() -> Prediction:
        return await pipeline.predict(body)

    return asyncio.run(predict())


def _body(n: int, top_k: int | None, escaped: bool = False) -> bytes:
    items = [IDS[(i * 7) % len(IDS)] if i % 10 else f"new_{i}" for i in range(n)]
    body = json.dumps({"user_id": "u", "items": items, "top_k": top_k, "seed": 11})
    if escaped:  # \u escapes send the body to the general parser
        body = body.replace("arm_", "\\u0061rm_").replace('"u"', '"\\u0075"')
    return body.encode()


@pytest.mark.parametrize("escaped", [False, True], ids=["fast parser", "general parser"])
@pytest.mark.parametrize("top_k", [None, 1, 7, 5000])
@pytest.mark.parametrize("n", [1, 400, 3000])
def test_table_and_fetched_counts_answer_alike(n: int, top_k: int | None, escaped: bool) -> None:
    """Seeded requests, unknown ids and top_k included: byte-identical bodies and
    counts whether the counts come from the arm table or from a fetch."""
    catalog = _catalog()
    body = _body(n, top_k, escaped)
    assert (parse_request(body, 10_000).items.buffer is body) == (not escaped)
    table = _predict(_table_pipeline(catalog), body)
    fetched = _predict(_fetch_pipeline(catalog), body)
    assert table.body == fetched.body
    assert table.unknown == fetched.unknown == sum(1 for i in range(n) if i % 10 == 0)
    answer = json.loads(table.body)
    assert len(answer["items"]) == min(n, top_k or n)
    scores = [item["score"] for item in answer["items"]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("top_k", [None, 3])
@pytest.mark.parametrize("half_life", [0.0, 1.0])
def test_native_and_twin_pipelines_write_the_same_bytes(
    top_k: int | None, half_life: float
) -> None:
    """The native pipeline and its numpy twin, on the same table and seeded request,
    write the same answer, byte for byte, for the table and the fetched-counts calls
    (with decay too: counts read 1.3 half-lives after they were stored)."""
    catalog = _catalog()
    request = parse_request(_body(3000, top_k), 10_000)
    src, spans, k = request.items.buffer, request.items.spans, request.k
    now, scale = 1.3, (math.exp2(-1.3) if half_life else 1.0)
    answers = []
    for backend in (gate, twin):
        index = backend.Index([literal_key(arm) for arm in catalog.ids])
        region = _table(catalog, half_life).region  # laid out; attached again below
        backend.table_init_lock(region)
        table = backend.LiveTable(region, index)
        draws = backend.Draws(2.0, 3.0)
        out = bytearray(backend.encode_bound(len(src), k))
        stats = backend.score_table(table, draws, 11, now, src, spans, k, out, 0)
        rows, _ = index.lookup(src, spans, len(catalog))
        counts = np.vstack([catalog.counts[:-1], [[0.0, 0.0]]])[np.minimum(rows, len(catalog))]
        out2 = bytearray(len(out))
        stats2 = backend.score_counts(
            counts[:, 0] * scale, counts[:, 1] * scale, 7, draws, 11, src, spans, k, out2, 0
        )
        assert out[: stats.written] == out2[: stats2.written]
        answers.append(bytes(out[: stats.written]))
    assert answers[0] == answers[1]


def test_unseeded_draws_follow_the_counts() -> None:
    """Without a seed the table path draws afresh, from the right Beta per item."""
    catalog = _catalog()
    pipeline = _table_pipeline(catalog)
    body = json.dumps({"items": [IDS[0]] * 4000}).encode()
    first = _predict(pipeline, body)
    second = _predict(pipeline, body)
    assert first.body != second.body
    scores = np.array([item["score"] for item in json.loads(first.body)["items"]])
    a = 2.0 + catalog.successes[0]
    b = 3.0 + catalog.failures[0]
    mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(scores.mean() - mean) < 4 * sd / np.sqrt(len(scores))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_queue_time_is_the_wait_for_the_inline_lane() -> None:
    """Six requests at once, each 2 ms of work (on an injected clock) against the lane's
    1 ms budget: the first runs at once, as it is asked for, and fills the turn. The
    five after it queue when it is done: the second waits for nothing, each later one
    2 ms more, for the one before it."""
    clock = FakeClock()

    def now() -> float:  # read inside each request's job: the job's 2 ms of work
        clock.now += 0.002
        return 0.0

    catalog = _catalog()
    score = TableScore(_table(catalog), InlineRunner(CONFIG, clock=clock), now, clock=clock)
    pipeline = Pipeline(score, max_items=10_000)
    body = json.dumps({"items": IDS[:100]}).encode()

    async def burst() -> list[float]:
        results = await asyncio.gather(*(pipeline.predict(body) for _ in range(6)))
        return [result.queue_s for result in results]

    waits = asyncio.run(burst())
    assert waits == pytest.approx([0.0, 0.0, 0.002, 0.004, 0.006, 0.008])
