"""The pure numpy / Python twin of the native pipeline (MAB_NO_NATIVE=1).

The same surface as `mab.native.gate`, and for seeded draws the same bytes: keyed
draws follow sample.cpp's algorithm step by step (the same IEEE operations in the
same order, numpy for the common path, `math` for the rare ones, whose log and exp
are the C library's, as std::log and std::exp are), ranks are a stable argsort of
the same keys, and scores are written as std::to_chars writes them. Unseeded draws
are keyed draws with a fresh random seed: the native stream differs, as any other
unseeded stream would. It is slow; it is the reference the tests hold the C++ to.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from decimal import Decimal
from typing import Any

import numpy as np

from mab.errors import InvalidSpans, ResponseTooLarge
from mab.native.api import FastParse, FloatArray, Rows, ScoreStats, Spans

NAME = "twin"
ISA = "twin"

_U64 = np.uint64
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_KEY_MUL = 0xD1B54A32D192ED03
_2_M53 = 2.0**-53  # a uniform's scale


# ---------------------------------------------------------------- parse


def parse_predict(body: bytes, max_items: int) -> FastParse | None:
    """The twin has no fast path: every body takes the general parser."""
    return None


def find_spans(json_array: bytes, n: int) -> Spans:
    """The spans of the n strings of a JSON array as orjson writes it."""
    spans = np.empty(2 * n, dtype=np.uint64)
    i, length = 1, len(json_array)
    if length < 2 or json_array[:1] != b"[":
        raise InvalidSpans("not a JSON array of strings")
    for item in range(n):
        if item > 0:
            if json_array[i : i + 1] != b",":
                raise InvalidSpans("not a JSON array of strings")
            i += 1
        if json_array[i : i + 1] != b'"':
            raise InvalidSpans("not a JSON array of strings")
        spans[2 * item] = i
        i += 1
        while i < length and json_array[i] != 0x22:  # '"'
            i += 2 if json_array[i] == 0x5C else 1  # a backslash escapes the next byte
        if i >= length:
            raise InvalidSpans("not a JSON array of strings")
        i += 1
        spans[2 * item + 1] = i
    if i + 1 != length or json_array[i:] != b"]":
        raise InvalidSpans("not a JSON array of strings")
    return spans


def _check_spans(src: bytes, spans: Spans) -> list[int]:
    bounds: list[int] = spans.tolist()
    for begin, end in zip(bounds[::2], bounds[1::2], strict=True):
        if end > len(src) or begin + 2 > end:
            raise InvalidSpans("a span is out of range")
    return bounds


# ---------------------------------------------------------------- index


class Index:
    """id literal -> row, as a dict."""

    def __init__(self, keys: list[bytes]) -> None:
        self._rows = {key: row for row, key in enumerate(keys)}
        if len(self._rows) != len(keys):
            raise ValueError("cannot index the ids: one repeats")
        self.size = len(keys)

    def lookup(self, src: bytes, spans: Spans, absent: int) -> tuple[Rows, int]:
        bounds = _check_spans(src, spans)
        get = self._rows.get
        rows = np.array(
            [
                get(src[b + 1 : e - 1], absent)
                for b, e in zip(bounds[::2], bounds[1::2], strict=True)
            ],
            dtype=np.int64,
        )
        return rows, int(np.count_nonzero(rows == absent))


# ---------------------------------------------------------------- sample: words


def _mix64(z: Any) -> Any:
    """splitmix64's finalizer over uint64 arrays (wrapping, as in C)."""
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _mix64_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _keys(seed: int, first: int, n: int) -> Any:
    index = np.arange(first, first + n, dtype=np.uint64)
    return _mix64(_U64(seed) ^ (index * _U64(_KEY_MUL)))


class _SplitMix:
    """An item's stream for the rare paths (sample_rng.h, SplitMix and Words)."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state

    def next(self) -> int:
        self.state = (self.state + _GOLDEN) & _MASK
        return _mix64_int(self.state)

    def uniform(self) -> float:
        return float(self.next() >> 11) * _2_M53

    def uniform_open(self) -> float:
        return (float(self.next() >> 11) + 0.5) * _2_M53


# ---------------------------------------------------------------- sample: ziggurat


def _ziggurat() -> tuple[list[int], list[float], list[float]]:
    """sample_draws.h's Ziggurat(): the same steps, with the C library's exp and log."""
    layers, r, area, m = 256, 3.6541528853610088, 4.92867323399e-3, float(2**52)
    k, w, f = [0] * layers, [0.0] * layers, [0.0] * layers
    dn = tn = r
    q = area / math.exp(-0.5 * dn * dn)
    k[0] = int((dn / q) * m)
    k[1] = 0
    w[0] = q / m
    w[layers - 1] = dn / m
    f[0] = 1.0
    f[layers - 1] = math.exp(-0.5 * dn * dn)
    for i in range(layers - 2, 0, -1):
        dn = math.sqrt(-2.0 * math.log(area / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1] = int((dn / tn) * m)
        tn = dn
        f[i] = math.exp(-0.5 * dn * dn)
        w[i] = dn / m
    return k, w, f


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat()
_K = np.array(_ZIG_K, dtype=np.uint64)
_W = np.array(_ZIG_W, dtype=np.float64)
_R = 3.6541528853610088
_INV_R = 1.0 / _R


def _with_sign_of_bit8(x: float, word: int) -> float:
    return -x if (word >> 8) & 1 else x


def _normal_slow(rng: _SplitMix, layer: int, magnitude: int, negative: bool) -> float:
    while True:
        x = float(magnitude) * _ZIG_W[layer]
        if layer == 0:
            while True:
                xx = -math.log(rng.uniform_open()) * _INV_R
                yy = -math.log(rng.uniform_open())
                if not yy + yy < xx * xx:
                    break
            return -(_R + xx) if negative else _R + xx
        f_hi, f_lo = _ZIG_F[layer], _ZIG_F[layer - 1]
        if f_hi + rng.uniform() * (f_lo - f_hi) < math.exp(-0.5 * x * x):
            return -x if negative else x
        u = rng.next()
        layer, negative, magnitude = u & 0xFF, bool((u >> 8) & 1), u >> 12
        if magnitude < _ZIG_K[layer]:
            y = float(magnitude) * _ZIG_W[layer]
            return -y if negative else y


def _normal_from(rng: _SplitMix, u: int) -> float:
    layer, magnitude = u & 0xFF, u >> 12
    if magnitude < _ZIG_K[layer]:
        return _with_sign_of_bit8(float(magnitude) * _ZIG_W[layer], u)
    return _normal_slow(rng, layer, magnitude, bool((u >> 8) & 1))


# ---------------------------------------------------------------- sample: gamma


def _rsqrt(x: Any) -> Any:
    """sample_draws.h's rsqrt over float64 arrays: the bit-level guess, four Newton steps."""
    bits = _U64(0x5FE6EB50C7B537A9) - (np.asarray(x, dtype=np.float64).view(np.uint64) >> _U64(1))
    y = bits.view(np.float64)
    half_x = 0.5 * x
    for _ in range(4):
        y = y * (1.5 - half_x * y * y)
    return y


def _gamma_shape(shape: Any) -> tuple[Any, Any, Any]:
    d = shape - 1.0 / 3.0
    c = _rsqrt(d) * (1.0 / 3.0)
    return d, c, c * c * (1.0 / 12.0) * (1.0 + 2.0**-40)


def _one_to_two(word: Any) -> Any:
    return (_U64(0x3FF0000000000000) | (word >> _U64(12))).view(np.float64)


def _candidates(shape: FloatArray, wn: Any, wu: Any) -> tuple[FloatArray, Any]:
    """gamma_candidate over arrays: each draw's first candidate and whether it stands."""
    d, c, e = _gamma_shape(shape)
    layer = (wn & _U64(0xFF)).astype(np.intp)
    magnitude = wn >> _U64(12)
    x = magnitude.astype(np.float64) * _W[layer]  # exact: magnitudes are < 2^52
    x = np.where((wn >> _U64(8)) & _U64(1), -x, x)
    v1 = 1.0 + c * x
    x2 = x * x
    one_minus_u = 2.0 - _one_to_two(wu)
    g = d * (v1 * v1 * v1)
    ok = (
        (magnitude < _K[layer]) & (one_minus_u * np.minimum(v1, 1.0) > e * x2 * x2) & (shape >= 1.0)
    )
    return g, ok


def _gamma_mt(rng: _SplitMix, d: float, c: float, e: float) -> float:
    while True:
        while True:
            x = _normal_from(rng, rng.next())
            v1 = 1.0 + c * x
            if not v1 <= 0.0:
                break
        v = v1 * v1 * v1
        u = rng.uniform()
        x2 = x * x
        if (1.0 - u) * min(v1, 1.0) > e * x2 * x2:
            return d * v
        if math.log(u) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            return d * v


def _scalar_shape(shape: float) -> tuple[float, float, float]:
    d, c, e = _gamma_shape(np.array([shape]))
    return float(d[0]), float(c[0]), float(e[0])


def _gamma_fix(rng: _SplitMix, shape: float, wn: int, wu: int) -> float:
    d, c, e = _scalar_shape(shape)
    x = _normal_from(rng, wn)
    v1 = 1.0 + c * x
    if v1 > 0.0:
        v = v1 * v1 * v1
        x2 = x * x
        u1 = float(_one_to_two(np.array([wu], dtype=np.uint64))[0])
        if (2.0 - u1) * min(v1, 1.0) > e * x2 * x2:
            return d * v
        if math.log(u1 - 1.0) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
            return d * v
    return _gamma_mt(rng, d, c, e)


def _log_gamma_draw(rng: _SplitMix, shape: float) -> float:
    boosted = shape + 1.0 if shape < 1.0 else shape
    g = math.log(_gamma_mt(rng, *_scalar_shape(boosted)))
    return g + math.log(rng.uniform_open()) / shape if shape < 1.0 else g


def _beta_small(rng: _SplitMix, a: float, b: float) -> float:
    lx = _log_gamma_draw(rng, a)  # X first: the order they read the stream in
    t = _log_gamma_draw(rng, b) - lx
    if t > 0:
        e = math.exp(-t)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(t))


# ---------------------------------------------------------------- sample: arrays


def _keyed(seed: int, first: int, a: FloatArray, b: FloatArray, n: int) -> FloatArray:
    """mab_beta_sample_keyed: draw i from the words keyed by (seed, first + i)."""
    a = np.broadcast_to(a, (n,)).astype(np.float64)
    b = np.broadcast_to(b, (n,)).astype(np.float64)
    keys = _keys(seed, first, n)
    words = [_mix64(keys + _U64(((q + 1) * _GOLDEN) & _MASK)) for q in range(4)]
    # Shapes < 1 make garbage candidates (as in C); they are never used.
    with np.errstate(all="ignore"):
        gx, ok_x = _candidates(a, words[0], words[1])
        gy, ok_y = _candidates(b, words[2], words[3])
    small = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(~(ok_x & ok_y)).tolist():  # the fix-up, in item order, X first
        rng = _SplitMix((int(keys[i]) + 4 * _GOLDEN) & _MASK)
        if a[i] >= 1.0 and b[i] >= 1.0:
            if not ok_x[i]:
                gx[i] = _gamma_fix(rng, float(a[i]), int(words[0][i]), int(words[1][i]))
            if not ok_y[i]:
                gy[i] = _gamma_fix(rng, float(b[i]), int(words[2][i]), int(words[3][i]))
        else:
            gx[i] = _beta_small(rng, float(a[i]), float(b[i]))
            small[i] = True
    hx = 0.5 * gx
    out: FloatArray = hx / (hx + 0.5 * gy)
    out[small] = gx[small]
    return out


class Draws:
    """The prior and a source of seeds for unseeded calls: one per thread."""

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0, seed: int | None = None):
        self.prior_alpha, self.prior_beta = prior_alpha, prior_beta
        self._seeds = np.random.default_rng(secrets.randbits(64) if seed is None else seed)

    def seed_of(self, seed: int | None) -> int:
        return int(self._seeds.integers(0, 2**64, dtype=np.uint64)) if seed is None else seed


def beta_check(a: FloatArray, b: FloatArray, n: int) -> int:
    for offset, values in ((0, a), (n, b)):
        values = np.broadcast_to(values, (n,))
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if len(bad):
            return offset + int(bad[0])
    return -1


def beta_sample(draws: Draws, a: FloatArray, b: FloatArray, out: FloatArray) -> None:
    out[:] = _keyed(draws.seed_of(None), 0, a, b, len(out))


def beta_sample_keyed(seed: int, first: int, a: FloatArray, b: FloatArray, out: FloatArray) -> None:
    out[:] = _keyed(seed, first, a, b, len(out))


# ---------------------------------------------------------------- rank


def _descending_keys(scores: FloatArray) -> Any:
    bits = scores.view(np.uint64)
    flip = (scores.view(np.int64) >> np.int64(63)).view(np.uint64) | _U64(1 << 63)
    return ~(bits ^ flip)


def rank(scores: FloatArray, k: int) -> Rows:
    if k > len(scores):
        raise InvalidSpans("rank: k is out of range")
    order: Rows = np.argsort(_descending_keys(scores), kind="stable")[:k].astype(np.int64)
    return order


# ---------------------------------------------------------------- encode


def to_chars(x: float) -> bytes:
    """What encode.cpp writes for a score: std::to_chars's shortest round-trip form
    (fixed or scientific, whichever is shorter, fixed on a tie; an integer in fixed
    form exactly), with `.0` added to an integer-looking result."""
    if not math.isfinite(x):
        return repr(x).encode()  # inf, nan: never a score
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    if point <= 0:
        fixed = "0." + "0" * -point + text
    elif point >= len(text):  # an integer: libstdc++ writes all its digits, exactly
        fixed = str(int(abs(x)))
    else:
        fixed = text[:point] + "." + text[point:]
    e = point - 1
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    scientific = f"{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    chosen = fixed if len(fixed) <= len(scientific) else scientific
    if not any(c in chosen for c in ".e"):
        chosen += ".0"
    return (("-" if sign else "") + chosen).encode()


def encode_bound(src_len: int, k: int) -> int:
    return src_len + k * (7 + 10 + 32 + 4) + 2  # as encode.cpp's mab_encode_bound


def _items(src: bytes, bounds: list[int], scores: FloatArray, order: Rows) -> bytes:
    n = len(scores)
    parts = []
    for i in order.tolist():
        if not 0 <= i < n:
            raise InvalidSpans("encode: an order entry is out of range")
        literal = src[bounds[2 * i] : bounds[2 * i + 1]]
        parts.append(b'{"id":' + literal + b',"score":' + to_chars(float(scores[i])) + b"}")
    return b"[" + b",".join(parts) + b"]"


def _write(out: bytearray, at: int, items: bytes) -> int:
    if len(items) > len(out) - at:
        raise ResponseTooLarge("encode: the answer does not fit its buffer")
    out[at : at + len(items)] = items
    return len(items)


def encode_ranked(
    src: bytes, spans: Spans, scores: FloatArray, order: Rows, out: bytearray, at: int
) -> int:
    bounds = _check_spans(src, spans)
    if len(order) > len(scores):
        raise InvalidSpans("encode: k is out of range")
    return _write(out, at, _items(src, bounds, scores, order))


# ---------------------------------------------------------------- pipeline


def _score(
    successes: FloatArray,
    failures: FloatArray,
    draws: Draws,
    seed: int | None,
    src: bytes,
    spans: Spans,
    k: int,
    out: bytearray,
    at: int,
    started: float,
) -> tuple[int, float, float, float]:
    alpha = draws.prior_alpha + successes
    beta = draws.prior_beta + failures
    fetched = time.perf_counter()
    scores = _keyed(draws.seed_of(seed), 0, alpha, beta, len(alpha))
    sampled = time.perf_counter()
    written = _write(out, at, _items(src, spans.tolist(), scores, rank(scores, k)))
    return written, fetched - started, sampled - fetched, time.perf_counter() - sampled


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
    started = time.perf_counter()
    if k > len(spans) // 2:
        raise InvalidSpans("score: k is out of range")
    rows, unknown = table.lookup(src, spans)
    counts = table.counts[rows]
    scale = table.scale(now)
    written, *times = _score(
        counts[:, 0] * scale, counts[:, 1] * scale, draws, seed, src, spans, k, out, at, started
    )
    return ScoreStats(unknown, written, *times)


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
    started = time.perf_counter()
    _check_spans(src, spans)
    if k > len(spans) // 2:
        raise InvalidSpans("score: k is out of range")
    alpha, beta = successes + draws.prior_alpha, failures + draws.prior_beta
    if beta_check(alpha, beta, len(alpha)) >= 0:
        from mab.errors import StoreFailed

        raise StoreFailed("the store gave counts that are not finite and >= 0")
    written, *times = _score(successes, failures, draws, seed, src, spans, k, out, at, started)
    return ScoreStats(unknown, written, *times)


# ---------------------------------------------------------------- live table
#
# The same region layout as table.cpp (laid out by mab/state/table.py). The twin keeps
# its own hashes in it (Python's, which forked workers share; blake2b for event ids),
# so a region is read by the backend that wrote it. The writers' lock is a POSIX
# record lock on an unlinked file: per process, and released if its holder dies.

_HEADER = (
    "magic version max_arms n_base n_arms over_slots over_seed blob_cap blob_used "
    "dedupe_cap dedupe_slots ring_head ring_count epoch t0 half_life off_counts "
    "off_updated off_new_ids off_over off_blob off_ring off_dedupe region_bytes "
    "generation segment"
).split()
_H = {name: i for i, name in enumerate(_HEADER)}
_RESCALE_AFTER = 64.0
_LOCKS: dict[int, int] = {}  # id(region) -> the lock file's descriptor


def table_init_lock(region: Any) -> None:
    import tempfile

    handle = tempfile.TemporaryFile(prefix="mab-table-lock-")
    _LOCKS[id(region)] = os.dup(handle.fileno())
    handle.close()


class LiveTable:
    """table.cpp's LiveTable in numpy and Python."""

    def __init__(self, region: Any, base: Index) -> None:
        self.region, self.base = region, base
        self._lock_fd = _LOCKS[id(region)]
        self._u = np.frombuffer(region, dtype=np.uint64, count=len(_HEADER))
        self._f = np.frombuffer(region, dtype=np.float64, count=len(_HEADER))
        h = self._header
        self.max_arms, self.n_base = h("max_arms"), h("n_base")
        added = self.max_arms - self.n_base
        self.counts = self._view("off_counts", np.float64, 2 * (self.max_arms + 1)).reshape(-1, 2)
        self.updated = self._view("off_updated", np.float64, self.max_arms)
        self.new_ids = self._view("off_new_ids", np.uint64, 2 * added).reshape(-1, 2)
        self.over = self._view("off_over", np.uint64, 4 * h("over_slots"))[::4]
        self.blob = self._view("off_blob", np.uint8, h("blob_cap"))
        self.ring = self._view("off_ring", np.uint64, 3 * h("dedupe_cap")).reshape(-1, 3)
        self.dedupe = self._view("off_dedupe", np.uint32, h("dedupe_slots"))

    def _header(self, name: str) -> Any:
        return float(self._f[_H[name]]) if name in ("t0", "half_life") else int(self._u[_H[name]])

    def _put(self, name: str, value: Any) -> None:
        (self._f if name in ("t0", "half_life") else self._u)[_H[name]] = value

    def _view(self, name: str, dtype: Any, count: int) -> Any:
        return np.frombuffer(self.region, dtype=dtype, count=count, offset=self._header(name))

    def lock(self) -> bool:
        import fcntl

        fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
        return False

    def unlock(self) -> None:
        import fcntl

        fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- arms

    def _added_key(self, row: int) -> bytes:
        at, length = self.new_ids[row - self.n_base].tolist()
        key: bytes = self.blob[at : at + length].tobytes()
        return key

    def _slot_of(self, key: bytes) -> tuple[int, int]:
        """(slot, row) of an added arm's key, or (the free slot for it, -1)."""
        mask = len(self.over) - 1
        slot = hash(key) & mask
        while (at := int(self.over[slot])) != 0:
            if self._added_key(at - 1) == key:
                return slot, at - 1
            slot = (slot + 1) & mask
        return slot, -1

    def _find(self, key: bytes) -> int:
        rows, unknown = self.base.lookup(
            b'"' + key + b'"', np.array([0, len(key) + 2], np.uint64), -1
        )
        if not unknown:
            return int(rows[0])
        return self._slot_of(key)[1] if self._header("n_arms") > self.n_base else -1

    def _add(self, key: bytes) -> int:
        row, used = int(self._header("n_arms")), int(self._header("blob_used"))
        self.blob[used : used + len(key)] = np.frombuffer(key, dtype=np.uint8)
        self._put("blob_used", used + len(key))
        self.new_ids[row - self.n_base] = (used, len(key))
        slot, _ = self._slot_of(key)
        self.over[slot] = row + 1
        self._put("n_arms", row + 1)
        return row

    def lookup(self, src: bytes, spans: Spans) -> tuple[Rows, int]:
        rows, unknown = self.base.lookup(src, spans, self.max_arms)
        if unknown and self._header("n_arms") > self.n_base:
            bounds = spans.tolist()
            for i in np.flatnonzero(rows == self.max_arms).tolist():
                row = self._slot_of(src[bounds[2 * i] + 1 : bounds[2 * i + 1] - 1])[1]
                rows[i] = self.max_arms if row < 0 else row
            unknown = int(np.count_nonzero(rows == self.max_arms))
        return rows, unknown

    def _room_for(self, keys: list[bytes]) -> bool:
        fresh = {key for key in keys if self._find(key) < 0}
        return bool(
            self._header("n_arms") + len(fresh) <= self.max_arms
            and self._header("blob_used") + sum(map(len, fresh)) <= len(self.blob)
        )

    def _growth(self, now: float) -> float:
        h = self._header("half_life")
        if h <= 0:
            return 1.0
        if (now - self._header("t0")) / h > _RESCALE_AFTER:
            n = self._header("n_arms")
            self.counts[:n] *= math.exp2(-(now - self._header("t0")) / h)
            self._put("t0", now)
        return math.exp2((now - self._header("t0")) / h)

    def scale(self, now: float) -> float:
        h = self._header("half_life")
        return math.exp2(-(now - self._header("t0")) / h) if h > 0 else 1.0

    # ---------------------------------------------------------------- event ids

    def _ring_pos(self, back: int) -> int:
        return int((self._header("ring_head") - back) % len(self.ring))

    def _dedupe_find(self, hi: int, lo: int) -> int:
        mask = len(self.dedupe) - 1
        slot = lo & mask
        while (at := int(self.dedupe[slot])) != 0:
            if self.ring[at - 1, 0] == hi and self.ring[at - 1, 1] == lo:
                return slot
            slot = (slot + 1) & mask
        return -1

    def _dedupe_erase(self, slot: int) -> None:
        mask = len(self.dedupe) - 1
        self.dedupe[slot] = 0
        nxt = (slot + 1) & mask
        while (at := int(self.dedupe[nxt])) != 0:
            home = int(self.ring[at - 1, 1]) & mask
            if ((nxt - home) & mask) >= ((nxt - slot) & mask):
                self.dedupe[slot], self.dedupe[nxt] = at, 0
                slot = nxt
            nxt = (nxt + 1) & mask

    def _drop_oldest(self) -> None:
        entry = self.ring[self._ring_pos(self._header("ring_count"))]
        slot = self._dedupe_find(int(entry[0]), int(entry[1]))
        if slot >= 0:
            self._dedupe_erase(slot)
        self._put("ring_count", self._header("ring_count") - 1)

    def _remember(self, hi: int, lo: int, now: float) -> None:
        if self._header("ring_count") == len(self.ring):
            self._drop_oldest()
        pos = self._header("ring_head")
        self.ring[pos] = (hi, lo, np.float64(now).view(np.uint64))
        mask = len(self.dedupe) - 1
        slot = lo & mask
        while self.dedupe[slot]:
            slot = (slot + 1) & mask
        self.dedupe[slot] = pos + 1
        self._put("ring_head", (pos + 1) % len(self.ring))
        self._put("ring_count", self._header("ring_count") + 1)

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
    ) -> tuple[Any, tuple[int, int, int]]:
        import hashlib

        bounds = _check_spans(src, spans)
        marks = event_spans.tolist()
        while self._header("ring_count"):  # forget the ids applied before now - window
            oldest = self.ring[self._ring_pos(self._header("ring_count"))]
            if float(oldest[2:3].view(np.float64)[0]) >= now - window:
                break
            self._drop_oldest()
        n = len(ds)
        keys = [src[bounds[2 * i] + 1 : bounds[2 * i + 1] - 1] for i in range(n)]
        ids: list[tuple[int, int] | None] = []
        duplicate, seen = [False] * n, set()
        for i in range(n):
            raw = event_src[marks[2 * i] : marks[2 * i + 1]]
            if not raw:
                ids.append(None)
                continue
            digest = hashlib.blake2b(raw, digest_size=16).digest()
            pair = (int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little"))
            ids.append(pair)
            duplicate[i] = self._dedupe_find(*pair) >= 0 or pair in seen
            seen.add(pair)
        if not self._room_for([key for key, dup in zip(keys, duplicate, strict=True) if not dup]):
            from mab.errors import ArmTableFull

            raise ArmTableFull("apply: the arm table has no room for more arms")
        g = self._growth(now)
        status = np.zeros(n, dtype=np.uint8)
        applied = added = duplicates = 0
        for i in range(n):
            if duplicate[i]:
                status[i] = 1
                duplicates += 1
                continue
            known = ids[i]
            if known is not None:
                self._remember(*known, now)
            row = self._find(keys[i])
            if row < 0:
                row = self._add(keys[i])
                status[i] = 2
                added += 1
            self.counts[row, 0] += ds[i] * g
            self.counts[row, 1] += df[i] * g
            self.updated[row] = now
            applied += 1
        return status, (applied, added, duplicates)

    def set(
        self, src: bytes, spans: Spans, successes: FloatArray, failures: FloatArray, t: FloatArray
    ) -> None:
        bounds = _check_spans(src, spans)
        keys = [src[bounds[2 * i] + 1 : bounds[2 * i + 1] - 1] for i in range(len(successes))]
        if not self._room_for(keys):
            from mab.errors import ArmTableFull

            raise ArmTableFull("set: the arm table has no room for more arms")
        for i, key in enumerate(keys):
            row = self._find(key)
            if row < 0:
                row = self._add(key)
            g = self._growth(float(t[i]))
            self.counts[row] = (successes[i] * g, failures[i] * g)
            self.updated[row] = t[i]

    def read(self, now: float, row: int) -> tuple[float, float, float]:
        scale = self.scale(now)
        return (
            float(self.counts[row, 0] * scale),
            float(self.counts[row, 1] * scale),
            float(self.updated[row]),
        )
