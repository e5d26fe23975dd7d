"""The Beta sampler as a library: `BetaSampler(seed=1).sample(alpha, beta)`.

Inputs are checked here (shapes, dtypes, lengths) and by one pass over the values
that runs before any draw, so a bad call raises `ValueError` and writes nothing.
The native calls release the GIL (cffi API mode), so threads draw in parallel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mab.native import backend
from mab.native.api import MAX_SEED, FloatArray

ArrayLike = npt.ArrayLike


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**64 - 1], got {seed}")
    return int(seed)


def _shape_param(value: ArrayLike, name: str) -> FloatArray:
    """`value` as a float64 array of 0 or 1 dimensions, contiguous."""
    if type(value) is np.ndarray and value.dtype == np.float64 and value.ndim == 1:
        if value.flags.c_contiguous:
            return value  # the hot path: no copy, no checks beyond these
        return np.ascontiguousarray(value)
    if np.iscomplexobj(value):
        raise ValueError(f"{name} must be real numbers, got complex")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} cannot be read as float64: {exc}") from None
    if array.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {array.shape}")
    # ascontiguousarray would turn a 0-d array into shape (1,)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class _Call:
    """The checked arguments of one bulk call, ready for C."""

    __slots__ = ("a", "b", "n", "out")

    def __init__(self, alpha: ArrayLike, beta: ArrayLike, out: FloatArray | None) -> None:
        a = _shape_param(alpha, "alpha")
        b = _shape_param(beta, "beta")
        if a.ndim == 1 and b.ndim == 1 and len(a) != len(b):
            raise ValueError(f"alpha and beta differ in length: {len(a)} != {len(b)}")
        n = len(a) if a.ndim == 1 else len(b) if b.ndim == 1 else 1
        if out is None:
            out = np.empty(n, dtype=np.float64)
        elif not (
            isinstance(out, np.ndarray)
            and out.dtype == np.float64
            and out.shape == (n,)
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            raise ValueError(f"out must be a writable, contiguous float64 array of length {n}")
        self.a, self.b, self.n, self.out = a, b, n, out
        if n == 0:
            return
        bad = backend.beta_check(a, b, n)
        if bad >= 0:
            name, array, i = ("alpha", a, bad) if bad < n else ("beta", b, bad - n)
            value = float(array[i] if array.ndim else array)
            where = f"{name}[{i}]" if array.ndim else name
            raise ValueError(f"{where} = {value!r}: Beta parameters must be finite and > 0")


class BetaSampler:
    """Beta draws from one PRNG stream (xoshiro256++). Not thread-safe: one per thread.

    `seed=None` seeds from OS entropy; an integer in [0, 2**64) gives the same
    sequence on every machine and every run.
    """

    __slots__ = ("_draws",)

    def __init__(self, seed: int | None = None) -> None:
        self._draws: Any = backend.Draws(seed=None if seed is None else _check_seed(seed))

    def sample(
        self, alpha: ArrayLike, beta: ArrayLike, out: FloatArray | None = None
    ) -> FloatArray:
        """One Beta(alpha[i], beta[i]) draw per i; a scalar applies to every i."""
        call = _Call(alpha, beta, out)
        if call.n:
            backend.beta_sample(self._draws, call.a, call.b, call.out)
        return call.out


def sample_keyed(
    alpha: ArrayLike,
    beta: ArrayLike,
    seed: int,
    first: int = 0,
    out: FloatArray | None = None,
) -> FloatArray:
    """Beta draws where draw i depends only on (`seed`, `first + i`).

    A request's items can so be split into any chunks, on any threads, and give
    the same scores: what makes a seeded /predict reproducible.
    """
    call = _Call(alpha, beta, out)
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first}")
    if call.n:
        backend.beta_sample_keyed(_check_seed(seed), first, call.a, call.b, call.out)
    return call.out
