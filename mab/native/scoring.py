"""The native pipeline as `mab` calls it: scorers, rank and encode.

The backend (`mab.native.backend`: the C++ gate or the twin) does the work; this
module checks what it is given (dtypes, shapes, that spans come in pairs; the
backend checks them against the buffer) and owns the answer buffers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import orjson

from mab.native import backend
from mab.native.api import FloatArray, Rows, ScoreStats, Spans

_TAIL_ROOM = 64  # what a caller may append to a buffer `Scorer` returns, free

# A bytearray of n bytes left as malloc gave them: bytearray(n) zero-fills the ~280 KB
# a 4,000-id answer may need (bench/RESULTS.md, section 0), and the pipeline
# overwrites every byte the caller keeps.
_uninitialized_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
_uninitialized_bytearray.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_uninitialized_bytearray.restype = ctypes.py_object


def literal_key(arm: str) -> bytes:
    """How an id is keyed in an index: its JSON literal without the quotes, as orjson
    escapes it (for plain ids, their bytes), which is what a request's spans bound."""
    return orjson.dumps(arm)[1:-1]


def check_spans(spans: Spans) -> Spans:
    if not (
        isinstance(spans, np.ndarray)
        and spans.dtype == np.uint64
        and spans.ndim == 1
        and len(spans) % 2 == 0
        and spans.flags.c_contiguous
    ):
        raise ValueError("spans must be a contiguous 1-D uint64 array of [begin, end) pairs")
    return spans


class Scorer:
    """Writes ranked answers: `head`, then the items array, with room to append a
    tail. Holds a draw stream of its own: one per thread."""

    def __init__(self, prior_alpha: float, prior_beta: float) -> None:
        self._draws: Any = backend.Draws(prior_alpha, prior_beta)

    @staticmethod
    def _buffer(head: bytes, src_len: int, k: int) -> bytearray:
        start = len(head)
        out: bytearray = _uninitialized_bytearray(
            None, start + backend.encode_bound(src_len, k) + _TAIL_ROOM
        )
        out[:start] = head
        return out

    @staticmethod
    def _trimmed(out: bytearray, at: int, stats: ScoreStats) -> bytearray:
        del out[at + stats.written :]  # keeps the allocation: appending the tail is free
        return out

    def score_table(
        self,
        table: Any,
        src: bytes,
        spans: Spans,
        k: int,
        seed: int | None,
        now: float,
        head: bytes = b"",
    ) -> tuple[bytearray, ScoreStats]:
        """The answer for the ids at `spans`, their counts from the live table
        (`ArmTable.native`, mab/state/table.py) decayed to `now`."""
        out = self._buffer(head, len(src), k)
        stats = backend.score_table(
            table, self._draws, seed, now, src, check_spans(spans), k, out, len(head)
        )
        return self._trimmed(out, len(head), stats), stats

    def score_counts(
        self,
        successes: FloatArray,
        failures: FloatArray,
        unknown: int,
        src: bytes,
        spans: Spans,
        k: int,
        seed: int | None,
        head: bytes = b"",
    ) -> tuple[bytearray, ScoreStats]:
        """The answer from counts aligned with the ids (a remote store's)."""
        n = len(check_spans(spans)) // 2
        for name, counts in (("successes", successes), ("failures", failures)):
            if counts.dtype != np.float64 or counts.shape != (n,) or not counts.flags.c_contiguous:
                raise ValueError(f"{name} must be a contiguous float64 array of {n} counts")
        out = self._buffer(head, len(src), k)
        stats = backend.score_counts(
            successes, failures, unknown, self._draws, seed, src, spans, k, out, len(head)
        )
        return self._trimmed(out, len(head), stats), stats


def rank(scores: FloatArray, top_k: int | None) -> Rows:
    """Indices of the highest scores, best first, cut to `top_k`; ties in index order."""
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    k = len(scores) if top_k is None else min(top_k, len(scores))
    return backend.rank(scores, k)


def encode_ranked(src: bytes, spans: Spans, scores: FloatArray, order: Rows) -> bytes:
    """`[{"id": ..., "score": ...}, ...]` for the ids at `spans` in `src`, in `order`."""
    if len(scores) != len(check_spans(spans)) // 2:
        raise ValueError(f"{len(spans) // 2} ids but {len(scores)} scores")
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    order = np.ascontiguousarray(order, dtype=np.int64)
    out = bytearray(backend.encode_bound(len(src), len(order)))
    written = backend.encode_ranked(src, spans, scores, order, out, 0)
    return bytes(out[:written])


def encode_items(ids: list[str], scores: FloatArray, order: Rows) -> bytes:
    """`encode_ranked` for ids given as strings."""
    src = orjson.dumps(ids)
    return encode_ranked(src, backend.find_spans(src, len(ids)), scores, order)
