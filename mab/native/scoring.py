"""Typed wrapper of the fused /predict path of the embedded store (score.cpp).

The general pipeline calls the same native steps (lookup, draw, rank, encode) from
Python; in the server the ~25 Python-level calls between them cost more than the
steps (bench/RESULTS.md). `EmbeddedScorer.score` makes one call instead.
"""

from __future__ import annotations

import ctypes
import secrets
from typing import Any

from mab.native._native import ffi, lib
from mab.native.codec import FloatArray, IdIndex, Spans

_TAIL_ROOM = 64  # what a caller may append to the buffer `score` returns, free

# A bytearray of n bytes left as malloc gave them: bytearray(n) zero-fills the ~280 KB
# a 4,000-id answer may need (memset was ~4% of a worker's CPU, perf), and the native
# scorer overwrites every byte the caller keeps.
_uninitialized_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_uninitialized_bytearray.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_uninitialized_bytearray.restype = ctypes.py_object


class EmbeddedScorer:
    """Scores fast-path requests against one catalog. Keeps scratch buffers and a
    PRNG stream of its own: use one per event-loop thread."""

    def __init__(
        self,
        index: IdIndex,
        successes: FloatArray,
        failures: FloatArray,
        prior_alpha: float,
        prior_beta: float,
    ) -> None:
        if len(successes) != index.size + 1 or len(failures) != index.size + 1:
            raise ValueError("counts need a row per indexed id plus the unknown row")
        self._index = index
        # The arrays stay referenced here: C reads them through these pointers.
        self._successes, self._failures = successes, failures
        self._successes_ptr = ffi.from_buffer("double[]", successes)
        self._failures_ptr = ffi.from_buffer("double[]", failures)
        self._prior_alpha, self._prior_beta = prior_alpha, prior_beta
        self._rng: Any = ffi.new("mab_rng *")
        lib.mab_rng_seed(self._rng, secrets.randbits(64))
        self._stats: Any = ffi.new("mab_score_stats *")

    def score(
        self, body: bytes, spans: Spans, top_k: int | None, seed: int | None, head: bytes = b""
    ) -> tuple[bytearray, int, float, float, float]:
        """`head` followed by the ranked items array, the unknown count, and the seconds
        spent fetching, sampling and encoding.

        The items are written straight into the buffer returned, with room left to
        append a few bytes: at 4,000 ids that saves copying a 180 KB answer twice
        (out of a scratch buffer, then into the response body).
        """
        n = len(spans) // 2
        k = n if top_k is None else min(top_k, n)
        need = lib.mab_encode_ranked_bound(len(body), k)
        start = len(head)
        out: bytearray = _uninitialized_bytearray(None, start + need + _TAIL_ROOM)
        out[:start] = head
        written = lib.mab_score_embedded(
            self._index.handle,
            self._successes_ptr,
            self._failures_ptr,
            self._prior_alpha,
            self._prior_beta,
            self._rng,
            seed is not None,
            seed or 0,
            body,
            ffi.from_buffer("size_t[]", spans),
            n,
            k,
            ffi.from_buffer(out) + start,
            need,
            self._stats,
        )
        if written < 0:
            raise MemoryError("the native scorer failed: out of memory or a bad count")
        del out[start + written :]  # keeps the allocation: appending the tail is free
        stats = self._stats
        return out, int(stats.unknown), stats.fetch_s, stats.sample_s, stats.encode_s
