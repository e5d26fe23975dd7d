"""The gate to the compiled extension: the one module that touches `lib`.

It refuses a build older than the sources beside it (their digest is compiled in),
turns every C status into an error of `mab.errors`, and gives the rest of `mab` a
surface of numpy arrays and bytes; `mab.native.twin` gives the same surface in pure
Python. Callers check shapes and dtypes (`mab.native.scoring`, `mab.native.sampler`);
the C code checks spans and orders against the buffers it is given.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from mab.errors import (
    ArmTableFull,
    InvalidSpans,
    NativeError,
    NativeOutOfMemory,
    ResponseTooLarge,
)
from mab.native._native import ffi, lib
from mab.native._stamp import source_stamp
from mab.native.api import Bytes, FastParse, FloatArray, Rows, ScoreStats, Spans

NAME = "native"
_VERSION = 4  # MAB_NATIVE_VERSION in pipeline.h


def _check_build() -> None:
    built = ffi.string(lib.mab_native_stamp()).decode()
    sources = source_stamp(Path(__file__).resolve().parent)
    if lib.mab_native_version() != _VERSION or built != sources:
        raise ImportError(
            f"stale build of mab.native._native (built from {built}, sources are {sources}): "
            "run `make venv` (or `pip install -e .`)"
        )


_check_build()
ISA: str = ffi.string(lib.mab_sampler_isa()).decode()  # "avx512", "avx2" or "portable"

_ERRORS: dict[int, tuple[type[Exception], str]] = {
    lib.MAB_E_NOMEM: (NativeOutOfMemory, "the native pipeline ran out of memory"),
    lib.MAB_E_RANGE: (InvalidSpans, "a span, an order entry or k is out of range"),
    lib.MAB_E_SPACE: (ResponseTooLarge, "the answer does not fit its buffer"),
    lib.MAB_E_FULL: (ArmTableFull, "the arm table has no room for more arms"),
}


def _fail(status: int, what: str) -> NoReturn:
    error, message = _ERRORS.get(status, (NativeError, f"native status {status}"))
    raise error(f"{what}: {message}")


if (_limit := os.environ.get("MAB_NATIVE_FAIL_ALLOCS_OVER")) is not None:
    lib.mab_fail_allocs_over(int(_limit))  # tests: allocation failures on demand


# ---------------------------------------------------------------- parse


def parse_predict(body: bytes, max_items: int) -> FastParse | None:
    """The body's common shape, or None when the general parser must read it."""
    # Every id takes at least 3 bytes ("" and a comma): a bound without a first pass.
    capacity = 2 * min(max_items, len(body) // 3 + 1)
    spans = np.empty(capacity, dtype=np.uint64)
    out = ffi.new("mab_predict_request *")
    status = lib.mab_parse_predict(
        body, len(body), max_items, ffi.from_buffer("size_t[]", spans), capacity, out
    )
    if status != lib.MAB_OK:
        return None
    user_from, user_to = out.user_id
    return FastParse(
        spans=spans[: 2 * out.n_items],
        user_id=body[user_from:user_to] if user_from >= 0 else None,
        top_k=out.top_k if out.top_k >= 0 else None,
        seed=out.seed if out.has_seed else None,
    )


def find_spans(json_array: bytes, n: int) -> Spans:
    """The spans of the n strings of a JSON array as orjson writes it."""
    spans = np.empty(2 * n, dtype=np.uint64)
    status = lib.mab_find_spans(json_array, len(json_array), n, ffi.from_buffer("size_t[]", spans))
    if status != lib.MAB_OK:
        _fail(status, "not a JSON array of strings")
    return spans


# ---------------------------------------------------------------- index


class Index:
    """id literal -> row, in native memory; seeded per process, so clients cannot aim
    ids at one probe chain."""

    def __init__(self, keys: list[bytes]) -> None:
        offsets = np.zeros(len(keys) + 1, dtype=np.uint64)
        np.cumsum([len(key) for key in keys], out=offsets[1:])
        handle = ffi.new("mab_index **")
        status = lib.mab_index_new(
            b"".join(keys),
            ffi.from_buffer("size_t[]", offsets),
            len(keys),
            secrets.randbits(64),
            handle,
        )
        if status == lib.MAB_E_REPEAT:
            raise ValueError("cannot index the ids: one repeats")
        if status != lib.MAB_OK:
            _fail(status, "cannot index the ids")
        self.handle: Any = ffi.gc(handle[0], lib.mab_index_free)
        self.size = len(keys)

    def lookup(self, src: bytes, spans: Spans, absent: int) -> tuple[Rows, int]:
        count = len(spans) // 2
        rows = np.empty(count, dtype=np.int64)
        unknown = ffi.new("size_t *")
        status = lib.mab_index_lookup(
            self.handle,
            src,
            len(src),
            ffi.from_buffer("size_t[]", spans),
            count,
            absent,
            ffi.from_buffer("int64_t[]", rows),
            unknown,
        )
        if status != lib.MAB_OK:
            _fail(status, "lookup")
        return rows, int(unknown[0])


# ---------------------------------------------------------------- sample


class Draws:
    """A stream of Beta draws and the prior added to every count: one per thread."""

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0, seed: int | None = None):
        self.rng: Any = ffi.new("mab_rng *")
        lib.mab_rng_seed(self.rng, secrets.randbits(64) if seed is None else seed)
        self.draw: Any = ffi.new("mab_draw *")
        self.draw.prior_alpha, self.draw.prior_beta = prior_alpha, prior_beta
        self.draw.rng = self.rng

    def keyed(self, seed: int | None) -> Any:
        """The draw settings of one call: from the stream, or keyed by (seed, item)."""
        draw = self.draw
        draw.keyed, draw.seed = (0, 0) if seed is None else (1, seed)
        return draw


def beta_check(a: FloatArray, b: FloatArray, n: int) -> int:
    """Index of the first invalid parameter (i in a, n + i in b), or -1."""
    bad = ffi.new("ptrdiff_t *")
    lib.mab_beta_check(
        ffi.from_buffer("double[]", a), a.ndim, ffi.from_buffer("double[]", b), b.ndim, n, bad
    )
    return int(bad[0])


def beta_sample(draws: Draws, a: FloatArray, b: FloatArray, out: FloatArray) -> None:
    lib.mab_beta_sample(
        draws.rng,
        ffi.from_buffer("double[]", a),
        a.ndim,
        ffi.from_buffer("double[]", b),
        b.ndim,
        len(out),
        ffi.from_buffer("double[]", out),
    )


def beta_sample_keyed(seed: int, first: int, a: FloatArray, b: FloatArray, out: FloatArray) -> None:
    lib.mab_beta_sample_keyed(
        seed,
        first,
        ffi.from_buffer("double[]", a),
        a.ndim,
        ffi.from_buffer("double[]", b),
        b.ndim,
        len(out),
        ffi.from_buffer("double[]", out),
    )


# ---------------------------------------------------------------- rank, encode


def rank(scores: FloatArray, k: int) -> Rows:
    order = np.empty(k, dtype=np.int64)
    status = lib.mab_rank(
        ffi.from_buffer("double[]", scores), len(scores), k, ffi.from_buffer("int64_t[]", order)
    )
    if status != lib.MAB_OK:
        _fail(status, "rank")
    return order


def encode_bound(src_len: int, k: int) -> int:
    bound: int = lib.mab_encode_bound(src_len, k)
    return bound


def encode_ranked(
    src: bytes, spans: Spans, scores: FloatArray, order: Rows, out: bytearray, at: int
) -> int:
    """Writes the ranked items array into out[at:]; returns its length."""
    written = ffi.new("size_t *")
    status = lib.mab_encode_ranked(
        src,
        len(src),
        ffi.from_buffer("size_t[]", spans),
        len(scores),
        ffi.from_buffer("double[]", scores),
        ffi.from_buffer("int64_t[]", order),
        len(order),
        ffi.from_buffer(out) + at,
        len(out) - at,
        written,
    )
    if status != lib.MAB_OK:
        _fail(status, "encode")
    return int(written[0])


# ---------------------------------------------------------------- live table


def table_init_lock(region: Any) -> None:
    if lib.mab_table_init_lock(ffi.from_buffer(region)) != lib.MAB_OK:
        raise NativeError("cannot make the arm table's lock")


class LiveTable:
    """A view of a laid-out shared region (mab/state/table.py); `base` indexes the
    rows the region was laid out with."""

    def __init__(self, region: Any, base: Index) -> None:
        self.region, self.base = region, base  # kept alive: C points into both
        handle = ffi.new("mab_table **")
        status = lib.mab_table_attach(ffi.from_buffer(region), len(region), base.handle, handle)
        if status != lib.MAB_OK:
            _fail(status, "cannot attach the arm table")
        self.handle: Any = ffi.gc(handle[0], lib.mab_table_detach)

    def lock(self) -> bool:
        """Take the writers' lock; True when its last holder died holding it."""
        return bool(lib.mab_table_lock(self.handle) == lib.MAB_RECOVERED)

    def unlock(self) -> None:
        lib.mab_table_unlock(self.handle)

    def lookup(self, src: bytes, spans: Spans) -> tuple[Rows, int]:
        count = len(spans) // 2
        rows = np.empty(count, dtype=np.int64)
        unknown = ffi.new("size_t *")
        status = lib.mab_table_lookup(
            self.handle,
            src,
            len(src),
            ffi.from_buffer("size_t[]", spans),
            count,
            ffi.from_buffer("int64_t[]", rows),
            unknown,
        )
        if status != lib.MAB_OK:
            _fail(status, "lookup")
        return rows, int(unknown[0])

    def apply(
        self,
        now: float,
        window: float,
        src: bytes,
        spans: Spans,
        ds: FloatArray,
        df: FloatArray,
        event_src: bytes,
        event_spans: Spans,
    ) -> tuple[Bytes, tuple[int, int, int]]:
        n = len(ds)
        status = np.empty(n, dtype=np.uint8)
        totals = ffi.new("size_t[3]")
        code = lib.mab_table_apply(
            self.handle,
            now,
            window,
            src,
            len(src),
            ffi.from_buffer("size_t[]", spans),
            n,
            ffi.from_buffer("double[]", ds),
            ffi.from_buffer("double[]", df),
            event_src,
            len(event_src),
            ffi.from_buffer("size_t[]", event_spans),
            ffi.from_buffer("uint8_t[]", status),
            totals,
        )
        if code != lib.MAB_OK:
            _fail(code, "apply")
        return status, (int(totals[0]), int(totals[1]), int(totals[2]))

    def set(
        self, src: bytes, spans: Spans, successes: FloatArray, failures: FloatArray, t: FloatArray
    ) -> None:
        code = lib.mab_table_set(
            self.handle,
            src,
            len(src),
            ffi.from_buffer("size_t[]", spans),
            len(successes),
            ffi.from_buffer("double[]", successes),
            ffi.from_buffer("double[]", failures),
            ffi.from_buffer("double[]", t),
        )
        if code != lib.MAB_OK:
            _fail(code, "set")

    def read(self, now: float, row: int) -> tuple[float, float, float]:
        out = ffi.new("double[3]")
        if lib.mab_table_read(self.handle, now, row, out) != lib.MAB_OK:
            raise InvalidSpans(f"no row {row}")
        return float(out[0]), float(out[1]), float(out[2])


# ---------------------------------------------------------------- pipeline


def _stats(stats: Any) -> ScoreStats:
    return ScoreStats(
        int(stats.unknown), int(stats.written), stats.fetch_s, stats.sample_s, stats.encode_s
    )


def score_table(
    table: LiveTable,
    draws: Draws,
    seed: int | None,
    now: float,
    src: bytes,
    spans: Spans,
    k: int,
    out: bytearray,
    at: int,
) -> ScoreStats:
    stats = ffi.new("mab_score_stats *")
    status = lib.mab_score_table(
        table.handle,
        now,
        draws.keyed(seed),
        src,
        len(src),
        ffi.from_buffer("size_t[]", spans),
        len(spans) // 2,
        k,
        ffi.from_buffer(out) + at,
        len(out) - at,
        stats,
    )
    if status != lib.MAB_OK:
        _fail(status, "score")
    return _stats(stats)


def score_counts(
    successes: FloatArray,
    failures: FloatArray,
    unknown: int,
    draws: Draws,
    seed: int | None,
    src: bytes,
    spans: Spans,
    k: int,
    out: bytearray,
    at: int,
) -> ScoreStats:
    stats = ffi.new("mab_score_stats *")
    status = lib.mab_score_counts(
        ffi.from_buffer("double[]", successes),
        ffi.from_buffer("double[]", failures),
        unknown,
        draws.keyed(seed),
        src,
        len(src),
        ffi.from_buffer("size_t[]", spans),
        len(spans) // 2,
        k,
        ffi.from_buffer(out) + at,
        len(out) - at,
        stats,
    )
    if status == lib.MAB_E_PARAM:
        raise _bad_counts(successes, failures, draws)
    if status != lib.MAB_OK:
        _fail(status, "score")
    return _stats(stats)


def _bad_counts(successes: FloatArray, failures: FloatArray, draws: Draws) -> Exception:
    from mab.errors import StoreFailed

    alpha = successes + draws.draw.prior_alpha
    beta = failures + draws.draw.prior_beta
    bad = int(
        np.flatnonzero(~(np.isfinite(alpha) & (alpha > 0) & np.isfinite(beta) & (beta > 0)))[0]
    )
    return StoreFailed(
        f"the store gave counts that are not finite and >= 0: "
        f"item {bad}: successes {successes[bad]!r}, failures {failures[bad]!r}"
    )
