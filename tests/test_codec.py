"""The response encoder writes exactly what orjson would, and rank is a stable
descending argsort: the native code and its twin alike."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest

from mab.native import gate, twin
from mab.native.api import Backend, FloatArray, Rows, Spans

BACKENDS = pytest.mark.parametrize("backend", [gate, twin], ids=["native", "twin"])


def encode_spans(
    backend: Backend, src: bytes, spans: Spans, scores: FloatArray, order: Rows
) -> bytes:
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    order = np.ascontiguousarray(order, dtype=np.int64)
    out = bytearray(backend.encode_bound(len(src), len(order)))
    written = backend.encode_ranked(src, spans, scores, order, out, 0)
    return bytes(out[:written])


def encode(backend: Backend, ids: list[str], scores: FloatArray, order: Rows) -> bytes:
    src = orjson.dumps(ids)
    return encode_spans(backend, src, backend.find_spans(src, len(ids)), scores, order)


def rank(scores: FloatArray, top_k: int | None, backend: Backend = gate) -> Rows:
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    return backend.rank(scores, len(scores) if top_k is None else min(top_k, len(scores)))


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


@BACKENDS
@pytest.mark.parametrize("k", [len(TRICKY_IDS), 3, 1])
def test_tricky_ids_round_trip(backend: Backend, k: int) -> None:
    """Escapes, unicode and empty ids come back intact, in rank order, cut to k."""
    rng = np.random.default_rng(1)
    scores = rng.random(len(TRICKY_IDS))
    order = np.argsort(-scores)[:k]
    out = encode(backend, TRICKY_IDS, scores, order)
    assert json.loads(out) == reference(TRICKY_IDS, scores, order)


@BACKENDS
def test_scores_round_trip_exactly(backend: Backend) -> None:
    """Every score parses back to the identical double, including 0, 1 and tiny values."""
    scores = np.array([0.0, 1.0, 5e-324, 1e-300, 0.1, 1 / 3, 0.9999999999999999, 2.5e-7])
    ids = [f"a{i}" for i in range(len(scores))]
    order = np.arange(len(scores))
    decoded = json.loads(encode(backend, ids, scores, order))
    assert [d["score"] for d in decoded] == scores.tolist()
    assert all(isinstance(d["score"], float) for d in decoded)  # 0 is written 0.0


@BACKENDS
def test_matches_orjson_on_random_requests(backend: Backend) -> None:
    """Random ids and orders: byte-identical parse to the orjson reference."""
    rnd = random.Random(7)
    alphabet = 'ab"\\\n é🎯'
    for n in [1, 2, 50, 400, 4000, 10]:  # shrinking after growing reuses the buffers
        ids = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 12))) for _ in range(n)]
        scores = np.array([rnd.random() for _ in range(n)])
        order = np.argsort(-scores)
        out = encode(backend, ids, scores, order)
        assert orjson.loads(out) == reference(ids, scores, order)


@BACKENDS
def test_bad_input_raises(backend: Backend) -> None:
    """Out-of-range order entries and spans are errors, not garbage; the wrapper
    refuses misaligned inputs."""
    from mab.native.scoring import encode_ranked

    spans = np.array([0, 3, 4, 7], dtype=np.uint64)
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        encode_ranked(b'"a","b"', spans, np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match="out of range"):
        encode_spans(backend, b'"a","b"', spans, np.array([0.5, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="out of range"):  # a span past the buffer
        encode_spans(backend, b'"a","b"', spans + 1, np.array([0.5, 0.2]), np.array([0, 1]))


@BACKENDS
def test_empty_order_is_an_empty_array(backend: Backend) -> None:
    """k = 0 writes `[]` (the encoder opens the first item with `[`, the others with `},`)."""
    assert encode(backend, ["a"], np.array([0.5]), np.array([], dtype=np.int64)) == b"[]"


def test_ids_of_every_length_ending_the_body() -> None:
    """Id literals are copied in overlapping 8- and 16-byte pieces: every length comes
    out intact, and the copy reads nothing past an id that ends the body (the ASan
    build of test-native-debug checks that)."""
    for length in range(41):
        text = "".join(chr(ord("a") + i % 26) for i in range(length))
        alone = orjson.dumps(text)  # the body ends at the id's closing quote
        spans = np.array([0, len(alone)], dtype=np.uint64)
        out = encode_spans(gate, alone, spans, np.array([0.25]), np.array([0]))
        assert out == b'[{"id":' + alone + b',"score":0.25}]'
    ids = ["".join(chr(ord("A") + (i + n) % 26) for i in range(n)) for n in range(41)]
    literals = [orjson.dumps(text) for text in ids]
    body = b"".join(literals)  # no separators: each id ends where the next begins
    ends = np.cumsum([len(literal) for literal in literals])
    spans = np.stack([ends - [len(literal) for literal in literals], ends], axis=1).ravel()
    scores = np.linspace(0.9, 0.01, len(ids))
    order = np.arange(len(ids))[::-1]
    out = encode_spans(gate, body, spans.astype(np.uint64), scores, order)
    assert orjson.loads(out) == reference(ids, scores, order)


@BACKENDS
@pytest.mark.parametrize("n", [1, 7, 64, 400, 4000])
@pytest.mark.parametrize("k", [None, 1, 3, "half"])
def test_rank_matches_a_stable_argsort(backend: Backend, n: int, k: int | str | None) -> None:
    """The native rank is numpy's stable descending argsort, cut to k (ties in index order)."""
    rng = np.random.default_rng(n)
    scores = rng.random(n) ** 3
    scores[::5] = scores[0]  # ties
    top_k = (n // 2 or 1) if k == "half" else k
    assert isinstance(top_k, int | None)
    expected = np.argsort(-scores, kind="stable")[:top_k]
    assert np.array_equal(rank(scores, top_k, backend), expected)


@pytest.mark.parametrize("n", [64, 4000])
def test_rank_orders_scores_equal_in_their_high_bits(n: int) -> None:
    """Neighbouring doubles (equal but for the last mantissa bits, which the radix
    passes do not look at), exact ties, negatives and infinities: still the stable
    descending argsort."""
    rng = np.random.default_rng(n)
    base = np.array([0.3, 0.7, 1e-300, -0.5, 2.0**-1022])
    steps = rng.integers(-3000, 3000, n)
    scores = (base[rng.integers(0, base.size, n)].view(np.int64) + steps).view(np.float64)
    scores[::7] = scores[1]
    scores[:3] = [np.inf, -np.inf, 0.0]
    expected = np.argsort(-scores, kind="stable")
    assert np.array_equal(rank(scores, None), expected)
    assert np.array_equal(rank(scores, n // 2), expected[: n // 2])


def key_order(scores: np.ndarray) -> np.ndarray:
    """The order of the native sort key: the IEEE bits made monotonic, descending, ties
    in index order. Unlike argsort(-scores) it puts +0.0 before -0.0 and orders NaNs."""
    bits = scores.view(np.uint64)
    monotonic = np.where(bits >> np.uint64(63) == 1, ~bits, bits | np.uint64(1 << 63))
    return np.argsort(~monotonic, kind="stable")


@BACKENDS
@pytest.mark.parametrize("n", [40, 400, 4000, 40_000])
@pytest.mark.parametrize("k", [1, 10, "n/16", "n/8", None])
@pytest.mark.parametrize("kind", ["specials", "tied best"])
def test_rank_follows_the_key_order(
    backend: Backend, n: int, k: int | str | None, kind: str
) -> None:
    """Each path (a sort for few scores, selection for a short top-k, the radix sort's
    digit widths) on Beta-like draws with signed zeros, NaNs and infinities mixed in,
    or with many scores equal to the best, so the k-th falls inside a run of ties."""
    rng = np.random.default_rng(n)
    scores = rng.beta(2, 60, n)
    if kind == "specials":
        specials = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, -5e-324, 0.5, -0.5]
        scores[rng.integers(0, n, n // 10)] = rng.choice(specials, n // 10)
    else:
        scores[rng.integers(0, n, n // 10)] = scores.max()
        scores[rng.integers(0, n, n // 10)] = np.nextafter(scores.max(), 0)
    top_k = n // int(k[2:]) if isinstance(k, str) else k
    assert np.array_equal(rank(scores, top_k, backend), key_order(scores)[:top_k])


@pytest.mark.parametrize("n", [40, 400, 4000])
@pytest.mark.parametrize("k", [1, "n/16", None])
def test_rank_of_all_equal_scores_is_index_order(n: int, k: int | str | None) -> None:
    """Scores that are all the same double (the sort key has no varying bit) rank in
    index order, on each path."""
    top_k = n // int(k[2:]) if isinstance(k, str) else k
    assert np.array_equal(rank(np.full(n, 0.25), top_k), np.arange(n)[:top_k])


def unit_fractions() -> np.ndarray:
    """~3.5 million doubles in [0.001, 1), weighted towards the hard cases."""
    rng = np.random.default_rng(2024)
    lowest, one = np.array([0.001, 1.0]).view(np.uint64)
    random_bits = rng.integers(lowest, one, 1_000_000, dtype=np.uint64)
    # Mantissas ending in zeros: short binary fractions, where ties to even occur.
    short_bits = rng.integers(lowest, one, 500_000, dtype=np.uint64)
    short_bits &= ~np.uint64(0) << rng.integers(0, 53, short_bits.size, dtype=np.uint64)
    edges = np.array([0.001, 0.01, 0.1, 1.0] + [2.0**-k for k in range(1, 10)])
    steps = np.arange(-1000, 1001, dtype=np.int64)
    near_edges = (edges.view(np.int64)[:, None] + steps).ravel().view(np.float64)
    # Decimals of 1..17 significant digits, with 0..2 leading zeros after the point.
    digits = rng.integers(1, 18, 1_000_000)
    mantissas = rng.integers(10 ** (digits - 1), 10**digits, dtype=np.uint64).tolist()
    zeros = rng.integers(0, 3, digits.size).tolist()
    decimals = [float(f"0.{'0' * z}{d}") for d, z in zip(mantissas, zeros, strict=True)]
    return np.concatenate(
        [
            rng.uniform(0.001, 1, 500_000),
            random_bits.view(np.float64),
            short_bits.view(np.float64),
            near_edges,
            np.arange(1, 1_000_000) / 1e6,  # every decimal of up to 6 digits
            np.array(decimals),
        ]
    )


def test_unit_fractions_match_repr() -> None:
    """Scores in [0.001, 1), the formatter's fast path, are written as repr writes them."""
    # There repr and std::to_chars agree (the build before the fast path passes this
    # too): "0.ddd", the fewest digits that parse back, the nearest of those.
    scores = unit_fractions()
    scores = scores[(scores >= 0.001) & (scores < 1)]
    assert scores.size > 3_000_000
    chunk = 200_000
    for start in range(0, scores.size, chunk):
        part = scores[start : start + chunk]
        out = encode(gate, [""] * part.size, part, np.arange(part.size))
        expected = ",".join(f'{{"id":"","score":{x!r}}}' for x in part.tolist())
        if out != f"[{expected}]".encode():
            texts = [item.rsplit(b":", 1)[1].rstrip(b"}]").decode() for item in out.split(b"},")]
            wrong = [(x, t) for x, t in zip(part.tolist(), texts, strict=True) if repr(x) != t]
            pytest.fail(f"{len(wrong)} scores differ from repr, e.g. {wrong[:5]}")


# What std::to_chars (libstdc++ 12) wrote for these before the fast path, kept since:
# exponent form when shorter (unlike repr: 0.0005, 1e+05), ".0" after integers.
TO_CHARS_OUTSIDE = [
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.0, "1.0"),
    (2.0, "2.0"),
    (12345.0, "12345.0"),
    (1e5, "1e+05"),
    (1.5, "1.5"),
    (5e-324, "5e-324"),
    (2.5e-7, "2.5e-07"),
    (1e-5, "1e-05"),
    (0.0005, "5e-04"),
    (0.0009999, "0.0009999"),
    (0.0009999999999999998, "0.0009999999999999998"),
    (-0.5, "-0.5"),
    (float("inf"), "inf"),  # not JSON, and never sampled: here for the ".0" check
    (float("nan"), "nan"),
]


@BACKENDS
def test_scores_outside_the_fast_path(backend: Backend) -> None:
    """Scores outside [0.001, 1) keep std::to_chars's output, ".0" after integers."""
    scores = np.array([score for score, _ in TO_CHARS_OUTSIDE])
    out = encode(backend, [""] * scores.size, scores, np.arange(scores.size))
    expected = ",".join(f'{{"id":"","score":{text}}}' for _, text in TO_CHARS_OUTSIDE)
    assert out == f"[{expected}]".encode()


def test_twin_writes_every_score_as_the_native_encoder() -> None:
    """The twin's to_chars and the native formatter agree on 300,000 doubles: the
    formatter's fast path, its edges, and the whole range of exponents."""
    rng = np.random.default_rng(11)
    fast = unit_fractions()[::20]
    anywhere = rng.integers(0, 0x7FF0000000000000, 50_000, dtype=np.uint64).view(np.float64)
    scores = np.concatenate([fast, anywhere, rng.random(20_000) * 1e-3])
    ids = [""] * scores.size
    order = np.arange(scores.size)
    assert encode(twin, ids, scores, order) == encode(gate, ids, scores, order)
