#!/usr/bin/env python3
"""Native Beta sampler vs numpy, in one run (ratios, since the machine is shared).

    python bench/sampler.py [--repeat 7]

Shapes are typical of click counts: a in 10..5,000, b in 500..50,000. Prints ns per
sample at n=400 (one call per request, Python overhead included) and n=1,000,000,
for ours and `numpy.random.default_rng().beta`, and the speed-up of 2 threads over
1 on large arrays (the GIL is released during the C call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from mab.native import ISA, BetaSampler


def per_call_seconds(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Median over `repeat` rounds of the mean time of one call."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - started) / calls)
    return statistics.median(rounds)


def threaded_seconds(threads: int, alpha: np.ndarray, beta: np.ndarray, repeat: int) -> float:
    """Wall time for `threads` threads to each draw len(alpha) samples."""
    samplers = [BetaSampler(seed=i) for i in range(threads)]
    outs = [np.empty_like(alpha) for _ in range(threads)]

    def work(i: int) -> None:
        samplers[i].sample(alpha, beta, out=outs[i])

    rounds = []
    for _ in range(repeat):
        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        rounds.append(time.perf_counter() - started)
    return statistics.median(rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7, help="rounds per figure (median)")
    args = ap.parse_args()

    rng = np.random.default_rng(2026)
    ours = BetaSampler(seed=1)
    print(f"native path: {ISA}; cores: {os.cpu_count()}; numpy {np.__version__}")
    print(f"{'n':>9} {'ours ns/sample':>15} {'numpy ns/sample':>16} {'speed-up':>9}")
    for n, calls in ((400, 2000), (1_000_000, 3)):
        alpha = rng.uniform(10, 5_000, n)
        beta = rng.uniform(500, 50_000, n)
        out = np.empty(n)
        t_ours = per_call_seconds(
            lambda a=alpha, b=beta, o=out: ours.sample(a, b, out=o), calls, args.repeat
        )
        t_numpy = per_call_seconds(lambda a=alpha, b=beta: rng.beta(a, b), calls, args.repeat)
        print(
            f"{n:>9} {t_ours / n * 1e9:>15.2f} {t_numpy / n * 1e9:>16.2f} {t_numpy / t_ours:>8.2f}x"
        )

    n = 4_000_000
    alpha = rng.uniform(10, 5_000, n)
    beta = rng.uniform(500, 50_000, n)
    one = threaded_seconds(1, alpha, beta, args.repeat)
    two = threaded_seconds(2, alpha, beta, args.repeat)
    # Two threads do twice the work; perfect scaling takes the same wall time.
    print(
        f"threads: 1 x {n:,} in {one * 1e3:.1f} ms, 2 x {n:,} in {two * 1e3:.1f} ms: "
        f"2 threads = {2 * one / two:.2f}x one thread"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
