"""What both backends of the native pipeline give: the compiled one (`gate`) and the
pure numpy / Python twin (`twin`, selected with MAB_NO_NATIVE=1).

The two agree to the byte for seeded draws, so the twin is the reference the tests
check the C++ against. Everything here is plain data, with no backend behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Rows = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]
# Two per id: the [begin, end) of its JSON literal in a buffer, quotes included.
Spans = npt.NDArray[np.uint64]

MAX_SEED = 2**64 - 1


@dataclass(frozen=True, slots=True)
class FastParse:
    """A /predict body in its common shape, parsed without a Python object per id."""

    spans: Spans  # into the body itself
    user_id: bytes | None  # the JSON literal, quotes included
    top_k: int | None
    seed: int | None


class ScoreStats(NamedTuple):
    """What one pipeline call reports besides the bytes it wrote."""

    unknown: int  # ids scored from the prior alone
    written: int  # bytes of the items array
    fetch_s: float  # looking the ids up (or taking their counts) and adding the prior
    sample_s: float
    encode_s: float  # rank and encode


class IndexLike(Protocol):
    size: int

    def lookup(self, src: bytes, spans: Spans, absent: int) -> tuple[Rows, int]: ...


class LiveTableLike(Protocol):
    def lock(self) -> bool: ...
    def unlock(self) -> None: ...
    def lookup(self, src: bytes, spans: Spans) -> tuple[Rows, int]: ...
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
    ) -> tuple[Bytes, tuple[int, int, int]]: ...
    def set(
        self, src: bytes, spans: Spans, successes: FloatArray, failures: FloatArray, t: FloatArray
    ) -> None: ...
    def read(self, now: float, row: int) -> tuple[float, float, float]: ...


class Backend(Protocol):
    """The surface `gate` and `twin` both are (mypy checks each module against it).
    Draws and Table objects go back to the backend that made them."""

    NAME: str
    ISA: str

    def parse_predict(self, body: bytes, max_items: int) -> FastParse | None: ...
    def find_spans(self, json_array: bytes, n: int) -> Spans: ...
    def Index(self, keys: list[bytes]) -> IndexLike: ...
    def Draws(
        self, prior_alpha: float = ..., prior_beta: float = ..., seed: int | None = ...
    ) -> Any: ...
    def table_init_lock(self, region: Any) -> None: ...
    def LiveTable(self, region: Any, base: Any) -> LiveTableLike: ...
    def beta_check(self, a: FloatArray, b: FloatArray, n: int) -> int: ...
    def beta_sample(self, draws: Any, a: FloatArray, b: FloatArray, out: FloatArray) -> None: ...
    def beta_sample_keyed(
        self, seed: int, first: int, a: FloatArray, b: FloatArray, out: FloatArray
    ) -> None: ...
    def rank(self, scores: FloatArray, k: int) -> Rows: ...
    def encode_bound(self, src_len: int, k: int) -> int: ...
    def encode_ranked(
        self, src: bytes, spans: Spans, scores: FloatArray, order: Rows, out: bytearray, at: int
    ) -> int: ...
    def score_table(
        self,
        table: Any,
        draws: Any,
        seed: int | None,
        now: float,
        src: bytes,
        spans: Spans,
        k: int,
        out: bytearray,
        at: int,
    ) -> ScoreStats: ...
    def score_counts(
        self,
        successes: FloatArray,
        failures: FloatArray,
        unknown: int,
        draws: Any,
        seed: int | None,
        src: bytes,
        spans: Spans,
        k: int,
        out: bytearray,
        at: int,
    ) -> ScoreStats: ...
