"""Typed wrapper of the native response encoder: the only code touching `_codec.lib`."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mab.native._codec import ffi, lib

_VERSION = 1  # must match MAB_CODEC_VERSION in codec.h
if lib.mab_codec_version() != _VERSION:
    raise ImportError("stale build of mab.native._codec: run `pip install -e .` (or `make venv`)")


class RankedEncoder:
    """Writes `[{"id": ..., "score": ...}, ...]` in rank order.

    Keeps its scratch buffers between calls, so use one per thread.
    """

    def __init__(self) -> None:
        self._out: Any = ffi.new("char[]", 1)
        self._out_cap = 1
        self._spans: Any = ffi.new("size_t[]", 2)
        self._spans_cap = 1

    def encode(
        self,
        ids: list[str],
        scores: npt.NDArray[np.float64],
        order: npt.NDArray[np.intp],
    ) -> bytes:
        """`ids` and `scores` are aligned; `order` lists the indices to write, best first."""
        n, k = len(ids), len(order)
        if len(scores) != n:
            raise ValueError(f"{n} ids but {len(scores)} scores")
        ids_json = orjson.dumps(ids)  # escapes every id once, in C
        need = lib.mab_encode_ranked_bound(len(ids_json), k)
        if need > self._out_cap:
            self._out, self._out_cap = ffi.new("char[]", need), need
        if n > self._spans_cap:
            self._spans, self._spans_cap = ffi.new("size_t[]", 2 * n), n
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        order64 = np.ascontiguousarray(order, dtype=np.int64)
        written = lib.mab_encode_ranked(
            ids_json,
            len(ids_json),
            n,
            ffi.from_buffer("double[]", scores),
            ffi.from_buffer("int64_t[]", order64),
            k,
            self._spans,
            self._out,
            self._out_cap,
        )
        if written < 0:
            raise ValueError("ids must be strings and order entries in range")
        return ffi.buffer(self._out, written)[:]
