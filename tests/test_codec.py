"""The native response encoder writes exactly what orjson would."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest

from mab.native.codec import RankedEncoder, rank

TRICKY_IDS = [
    "plain",
    'quote"inside',
    "back\\slash",
    "tab\tand\nnewline",
    "\x00control\x1f",
    "ünïcødé ✓",
    "emoji 🎯",
    "",
    "\\",
    '"',
    "ends with backslash\\",
]


def reference(ids: list[str], scores: np.ndarray, order: np.ndarray) -> list[dict[str, object]]:
    return [{"id": ids[i], "score": float(scores[i])} for i in order]


@pytest.mark.parametrize("k", [len(TRICKY_IDS), 3, 1])
def test_tricky_ids_round_trip(k: int) -> None:
    """Escapes, unicode and empty ids come back intact, in rank order, cut to k."""
    rng = np.random.default_rng(1)
    scores = rng.random(len(TRICKY_IDS))
    order = np.argsort(-scores)[:k]
    out = RankedEncoder().encode(TRICKY_IDS, scores, order)
    assert json.loads(out) == reference(TRICKY_IDS, scores, order)


def test_scores_round_trip_exactly() -> None:
    """Every score parses back to the identical double, including 0, 1 and tiny values."""
    scores = np.array([0.0, 1.0, 5e-324, 1e-300, 0.1, 1 / 3, 0.9999999999999999, 2.5e-7])
    ids = [f"a{i}" for i in range(len(scores))]
    order = np.arange(len(scores))
    decoded = json.loads(RankedEncoder().encode(ids, scores, order))
    assert [d["score"] for d in decoded] == scores.tolist()
    assert all(isinstance(d["score"], float) for d in decoded)  # 0 is written 0.0


def test_matches_orjson_on_random_requests() -> None:
    """Random ids and orders: byte-identical parse to the orjson reference, reusing buffers."""
    rnd = random.Random(7)
    encoder = RankedEncoder()
    alphabet = 'ab"\\\n é🎯'
    for n in [1, 2, 50, 400, 4000, 10]:  # shrinking after growing reuses the buffers
        ids = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(n)]
        scores = np.array([rnd.random() for _ in range(n)])
        order = np.argsort(-scores)
        out = encoder.encode(ids, scores, order)
        assert orjson.loads(out) == reference(ids, scores, order)


def test_bad_input_raises() -> None:
    """Misaligned inputs and out-of-range order entries are errors, not garbage."""
    encoder = RankedEncoder()
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        encoder.encode(["a", "b"], np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match="in range"):
        encoder.encode(["a", "b"], np.array([0.5, 0.2]), np.array([0, 2]))


@pytest.mark.parametrize("n", [1, 7, 64, 400, 4000])
@pytest.mark.parametrize("k", [None, 1, 3, "half"])
def test_rank_matches_a_stable_argsort(n: int, k: int | str | None) -> None:
    """The native rank is numpy's stable descending argsort, cut to k (ties in index order)."""
    rng = np.random.default_rng(n)
    scores = rng.random(n) ** 3
    scores[::5] = scores[0]  # ties
    top_k = (n // 2 or 1) if k == "half" else k
    assert isinstance(top_k, int | None)
    expected = np.argsort(-scores, kind="stable")[:top_k]
    assert np.array_equal(rank(scores, top_k), expected)
