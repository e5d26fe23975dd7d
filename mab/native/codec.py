"""Typed wrapper of the native HTTP body codec (request.cpp, codec.cpp in `_native`).

- `parse_predict`: the fast path for /predict bodies; ids stay spans into the body.
- `IdIndex`: the catalog's id -> row hash index that looks such spans up.
- `rank`: the order of the best scores (radix sort, or selection for a short top-k).
- `RankedEncoder`: writes the ranked `[{"id", "score"}, ...]` array.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mab.native._native import ffi, lib

_VERSION = 3  # must match MAB_CODEC_VERSION in codec.h
if lib.mab_codec_version() != _VERSION:
    raise ImportError("stale build of mab.native._native: run `pip install -e .` (or `make venv`)")

FloatArray = npt.NDArray[np.float64]
Spans = npt.NDArray[np.uint64]  # 2 per id: [begin, end) of its literal, quotes included
Rows = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FastRequest:
    """A /predict body in its common shape, parsed without a Python object per id."""

    body: bytes
    spans: Spans
    user_id: bytes | None  # the JSON literal, quotes included
    top_k: int | None
    seed: int | None

    def __len__(self) -> int:
        return len(self.spans) // 2


def parse_predict(body: bytes, max_items: int) -> FastRequest | None:
    """The request, or None when the body needs the general parser: invalid JSON,
    schema errors, escapes or non-ASCII in ids, duplicate keys, too many ids."""
    # Every id takes at least 3 bytes ("" and a comma): a bound without a first pass.
    capacity = 2 * min(max_items, len(body) // 3 + 1)
    spans = np.empty(capacity, dtype=np.uint64)
    out = ffi.new("mab_predict_request *")
    if lib.mab_parse_predict(
        body, len(body), max_items, ffi.from_buffer("size_t[]", spans), capacity, out
    ):
        return None
    user_from, user_to = out.user_id
    return FastRequest(
        body=body,
        spans=spans[: 2 * out.n_items],
        user_id=body[user_from:user_to] if user_from >= 0 else None,
        top_k=out.top_k if out.top_k >= 0 else None,
        seed=out.seed if out.has_seed else None,
    )


class IdIndex:
    """id -> row of a catalog, in native memory; built once, before the fork.

    Unknown ids map to row `len(ids)`. Seeded per process, so clients cannot aim
    ids at one probe chain.
    """

    def __init__(self, ids: list[str]) -> None:
        encoded = [arm.encode() for arm in ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.uint64)
        np.cumsum([len(arm) for arm in encoded], out=offsets[1:])
        blob = b"".join(encoded)
        handle = lib.mab_index_new(
            blob, ffi.from_buffer("size_t[]", offsets), len(encoded), secrets.randbits(64)
        )
        if handle == ffi.NULL:
            raise ValueError("cannot index the catalog: an id repeats, or out of memory")
        self.handle: Any = ffi.gc(handle, lib.mab_index_free)
        self.size = len(encoded)

    def lookup(self, body: bytes, spans: Spans) -> tuple[Rows, int]:
        """Rows of the ids at `spans` in `body`, and how many were unknown."""
        count = len(spans) // 2
        rows = np.empty(count, dtype=np.int64)
        unknown = lib.mab_index_lookup(
            self.handle,
            body,
            ffi.from_buffer("size_t[]", spans),
            count,
            ffi.from_buffer("int64_t[]", rows),
        )
        return rows, int(unknown)


def rank(scores: npt.NDArray[np.float64], top_k: int | None) -> Rows:
    """Indices of the highest scores, best first, cut to `top_k`; ties in index order."""
    n = len(scores)
    k = n if top_k is None else min(top_k, n)
    scores = np.ascontiguousarray(scores, dtype=np.float64)
    order = np.empty(k, dtype=np.int64)
    if lib.mab_rank(ffi.from_buffer("double[]", scores), n, k, ffi.from_buffer("int64_t[]", order)):
        raise MemoryError("no memory to rank the scores")
    return order


class RankedEncoder:
    """Writes `[{"id": ..., "score": ...}, ...]` in rank order.

    Keeps its scratch buffers between calls, so use one per thread.
    """

    def __init__(self) -> None:
        self._out: Any = ffi.new("char[]", 1)
        self._out_cap = 1
        self._spans: Any = ffi.new("size_t[]", 2)
        self._spans_cap = 1

    def _room(self, source_len: int, k: int) -> None:
        need = lib.mab_encode_ranked_bound(source_len, k)
        if need > self._out_cap:
            self._out, self._out_cap = ffi.new("char[]", need), need

    def encode(
        self,
        ids: list[str],
        scores: npt.NDArray[np.float64],
        order: Rows | npt.NDArray[np.intp],
    ) -> bytes:
        """`ids` and `scores` are aligned; `order` lists the indices to write, best first."""
        n, k = len(ids), len(order)
        if len(scores) != n:
            raise ValueError(f"{n} ids but {len(scores)} scores")
        ids_json = orjson.dumps(ids)  # escapes every id once, in C
        self._room(len(ids_json), k)
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
        encoded: bytes = ffi.buffer(self._out, written)[:]
        return encoded

    def encode_spans(
        self,
        source: bytes,
        spans: Spans,
        scores: npt.NDArray[np.float64],
        order: Rows,
    ) -> bytes:
        """Like `encode`, with the ids as JSON literals at `spans` in `source`."""
        n, k = len(spans) // 2, len(order)
        if len(scores) != n:
            raise ValueError(f"{n} ids but {len(scores)} scores")
        self._room(len(source), k)
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        order64 = np.ascontiguousarray(order, dtype=np.int64)
        written = lib.mab_encode_ranked_spans(
            source,
            ffi.from_buffer("size_t[]", spans),
            n,
            ffi.from_buffer("double[]", scores),
            ffi.from_buffer("int64_t[]", order64),
            k,
            self._out,
            self._out_cap,
        )
        if written < 0:
            raise ValueError("order entries must be in range")
        encoded: bytes = ffi.buffer(self._out, written)[:]
        return encoded
