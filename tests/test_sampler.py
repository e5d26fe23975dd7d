"""The native Beta sampler: exact distribution, reproducibility, input checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from scipy import stats

from mab.native import ISA, BetaSampler, sample_keyed

N = 200_000
# The shape pairs of the issue: tiny, skewed, flat, click-like, huge.
SHAPES = [
    (0.05, 0.05),
    (0.5, 2.0),
    (1.0, 1.0),
    (2.0, 5.0),
    (50.0, 950.0),
    (3000.0, 47000.0),
    (1e6, 1e6 + 3),
]


def ks_pvalue(draws: np.ndarray, a: float, b: float) -> float:
    """Kolmogorov-Smirnov p-value of `draws` against Beta(a, b).

    For tiny shapes a real share of the mass lies within 1e-16 of 0 or 1 and rounds
    to exactly 0.0 or 1.0 (8% at a = b = 0.05; numpy does the same). Such ties break
    the continuous KS statistic, so it is taken over the draws strictly inside
    (1e-300, 1 - 1e-12) only: censoring can only shrink D, so the p-value stays valid
    (conservative).
    """
    x = np.sort(draws)
    n = len(x)
    cdf = stats.beta(a, b).cdf(x)
    i = np.arange(1, n + 1)
    inside = (x > 1e-300) & (x < 1 - 1e-12)
    d = max(np.max((i / n - cdf)[inside]), np.max((cdf - (i - 1) / n)[inside]))
    return float(stats.kstwo.sf(d, n))


@pytest.mark.parametrize(("a", "b"), SHAPES)
def test_draws_follow_beta(a: float, b: float) -> None:
    """200,000 draws pass KS against scipy's Beta, and mean and variance are within 4 SE."""
    draws = BetaSampler(seed=20261125).sample(np.full(N, a), np.full(N, b))
    assert ks_pvalue(draws, a, b) > 0.001
    mean, var = stats.beta(a, b).stats(moments="mv")
    assert abs(draws.mean() - mean) < 4 * np.sqrt(var / N)
    # SE of the sample variance: sqrt((mu4 - var^2) / n), mu4 from scipy's kurtosis.
    kurt = float(stats.beta(a, b).stats(moments="k"))
    mu4 = (kurt + 3) * var**2
    assert abs(draws.var() - var) < 4 * np.sqrt((mu4 - var**2) / N)


@pytest.mark.parametrize(("a", "b"), SHAPES[:5])
def test_keyed_draws_follow_beta(a: float, b: float) -> None:
    """The per-item keyed streams of seeded requests give Beta draws too."""
    draws = sample_keyed(np.full(N, a), np.full(N, b), seed=7)
    assert ks_pvalue(draws, a, b) > 0.001


def test_mixed_shapes_in_one_call() -> None:
    """Each draw uses its own pair: per-item means come out right in one bulk call."""
    a = np.tile([1.0, 0.3, 900.0, 5.0], 50_000)
    b = np.tile([1.0, 0.3, 100.0, 95.0], 50_000)
    draws = BetaSampler(seed=3).sample(a, b).reshape(-1, 4)
    np.testing.assert_allclose(draws.mean(axis=0), [0.5, 0.5, 0.9, 0.05], atol=0.005)


@pytest.mark.parametrize(("a", "b"), [(0.01, 0.01), (0.01, 5.0), (1e-3, 1e3), (1e7, 1e7)])
def test_extreme_shapes_stay_finite(a: float, b: float) -> None:
    """Tiny shapes do not give NaN (log space); huge ones do not overflow."""
    draws = BetaSampler(seed=1).sample(np.full(50_000, a), b)
    assert np.all(np.isfinite(draws))
    assert np.all((draws >= 0) & (draws <= 1))
    assert abs(draws.mean() - a / (a + b)) < 0.01


def test_same_seed_same_draws() -> None:
    """An integer seed gives the identical sequence."""
    a, b = np.linspace(1, 500, 1000), np.linspace(500, 5, 1000)
    first = BetaSampler(seed=42).sample(a, b)
    again = BetaSampler(seed=42).sample(a, b)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, BetaSampler(seed=43).sample(a, b))


def test_stream_continues_across_calls() -> None:
    """No reseeding per call: two calls of 300 draw what one call of 600 draws."""
    a, b = np.full(600, 20.0), np.full(600, 400.0)
    whole = BetaSampler(seed=5).sample(a, b)
    parts = BetaSampler(seed=5)
    halves = np.concatenate([parts.sample(a[:300], b[:300]), parts.sample(a[300:], b[300:])])
    assert np.array_equal(whole, halves)


def test_entropy_seeds_differ() -> None:
    """seed=None seeds from the OS: two samplers draw different numbers."""
    a = np.full(100, 3.0)
    assert not np.array_equal(BetaSampler().sample(a, a), BetaSampler().sample(a, a))


def test_different_seeds_are_uncorrelated() -> None:
    """Streams of neighbouring seeds show no correlation."""
    a = np.full(N, 2.0)
    x = BetaSampler(seed=1000).sample(a, a)
    y = BetaSampler(seed=1001).sample(a, a)
    assert abs(np.corrcoef(x, y)[0, 1]) < 4 / np.sqrt(N)
    keyed_x, keyed_y = sample_keyed(a, a, seed=1000), sample_keyed(a, a, seed=1001)
    assert abs(np.corrcoef(keyed_x, keyed_y)[0, 1]) < 4 / np.sqrt(N)


def test_keyed_draws_do_not_depend_on_chunking() -> None:
    """Draw i depends on (seed, index) only: any split into calls gives the same array."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 100, 5000), rng.uniform(100, 1000, 5000)
    whole = sample_keyed(a, b, seed=99)
    for chunk in (1, 7, 256, 1000):
        parts = [
            sample_keyed(a[lo : lo + chunk], b[lo : lo + chunk], seed=99, first=lo)
            for lo in range(0, 5000, chunk)
        ]
        assert np.array_equal(np.concatenate(parts), whole)


def _draws_in_subprocess(env: dict[str, str]) -> dict[str, list[float]]:
    code = (
        "import json, numpy as np; from mab.native import ISA, BetaSampler, sample_keyed;"
        "a = np.linspace(0.2, 3000, 997); b = np.linspace(4000, 0.5, 997);"
        "print(json.dumps({'isa': ISA, 'plain': BetaSampler(seed=8).sample(a, b).tolist(),"
        "'keyed': sample_keyed(a, b, seed=8).tolist()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout
    result: dict[str, list[float]] = json.loads(out)
    return result


def test_portable_and_simd_paths_draw_the_same() -> None:
    """Every code path this CPU can run (AVX-512, AVX2, portable) draws the same bits."""
    native = _draws_in_subprocess({})
    assert native["isa"] == ISA
    avx2 = _draws_in_subprocess({"MAB_NATIVE_AVX512": "0"})
    portable = _draws_in_subprocess({"MAB_NATIVE_PORTABLE": "1"})
    assert portable["isa"] == "portable"
    for other in (avx2, portable):
        assert other["plain"] == native["plain"]
        assert other["keyed"] == native["keyed"]


def test_scalars_broadcast_and_out_is_filled() -> None:
    """A scalar applies to every item; `out` is filled in place and returned."""
    out = np.empty(1000)
    result = BetaSampler(seed=1).sample(2.0, np.full(1000, 3.0), out=out)
    assert result is out
    assert np.all((out > 0) & (out < 1))
    assert BetaSampler(seed=1).sample(2.0, 3.0).shape == (1,)
    assert BetaSampler(seed=1).sample([], []).shape == (0,)
    assert np.array_equal(
        BetaSampler(seed=2).sample([2, 2], [3, 3]), BetaSampler(seed=2).sample(2.0, [3.0, 3.0])
    )


@pytest.mark.parametrize(
    ("alpha", "beta", "message"),
    [
        ([1.0, 0.0], [1.0, 1.0], r"alpha\[1\] = 0.0"),
        ([1.0, -2.0], [1.0, 1.0], r"alpha\[1\] = -2.0"),
        ([1.0, 1.0], [1.0, float("nan")], r"beta\[1\] = nan"),
        ([1.0, 1.0], [float("inf"), 1.0], r"beta\[0\] = inf"),
        (0.0, [1.0, 1.0], r"alpha = 0.0"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], "differ in length"),
        (["a", "b"], [1.0, 1.0], "cannot be read as float64"),
        ([1j, 2j], [1.0, 1.0], "complex"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
        (None, [1.0], r"alpha = nan"),
    ],
)
def test_invalid_parameters_raise(alpha: object, beta: object, message: str) -> None:
    """Bad parameters raise ValueError naming the problem, and write nothing."""
    out = np.full(2, -1.0)
    with pytest.raises(ValueError, match=message):
        BetaSampler(seed=1).sample(alpha, beta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        sample_keyed(alpha, beta, seed=1)  # type: ignore[arg-type]
    if np.ndim(alpha) == 1 and len(alpha) == 2 and np.ndim(beta) == 1 and len(beta) == 2:
        with pytest.raises(ValueError):
            BetaSampler(seed=1).sample(alpha, beta, out=out)  # type: ignore[arg-type]
        assert np.all(out == -1.0)


@pytest.mark.parametrize(
    "out",
    [np.empty(3), np.empty(2, dtype=np.float32), np.empty((2, 1)), np.empty(4)[::2], [0.0, 0.0]],
)
def test_bad_out_raises(out: object) -> None:
    """`out` must be a writable contiguous float64 array of the right length."""
    with pytest.raises(ValueError, match="out must be"):
        BetaSampler(seed=1).sample([1.0, 2.0], [1.0, 2.0], out=out)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "7", True])
def test_bad_seeds_raise(seed: object) -> None:
    """Seeds are integers in [0, 2**64)."""
    with pytest.raises(ValueError, match="seed"):
        BetaSampler(seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        sample_keyed([1.0], [1.0], seed=seed)  # type: ignore[arg-type]


def test_gil_is_released_while_sampling() -> None:
    """While one thread is inside a long native call, Python code runs on another."""
    n = 20_000_000
    a, b = np.full(n, 20.0), np.full(n, 400.0)
    out = np.empty(n)
    started = threading.Event()

    def draw() -> None:
        started.set()
        BetaSampler(seed=1).sample(a, b, out=out)

    thread = threading.Thread(target=draw)
    thread.start()
    started.wait()
    time.sleep(0.005)  # let the worker enter the C call
    steps = 0
    while thread.is_alive():
        steps += 1
    thread.join()
    # With the GIL held for the whole call, this loop could not run in between.
    assert steps > 10_000
