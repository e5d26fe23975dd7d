#!/usr/bin/env python3
"""Time each stage of /predict in-process (no HTTP), in microseconds per request.

    python bench/stages.py [--repeat 5]

Stages, each called on its own: parse (body -> request; the fast parser and the
general one), fetch (ids -> rows of the arm table), sample (Beta draws), rank, encode.
The `pipeline` row is the one native call the server makes (`Scorer.score_table`:
fetch to encode), with the parse before it. Uses the benchmark catalog and bodies of
bench/catalog.py (100k arms; 400 and 4,000 ids).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)

from mab.config import Config  # noqa: E402
from mab.native import BetaSampler  # noqa: E402
from mab.native.scoring import Scorer, encode_ranked, rank  # noqa: E402
from mab.request import parse_general, parse_request  # noqa: E402
from mab.store.embedded import EmbeddedStore  # noqa: E402


def per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    fn()
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    args = ap.parse_args()
    data = catalog.write(args.data)
    store = EmbeddedStore(dataclasses.replace(Config(), catalog=data / "arms.csv"))
    table = store.table
    live, lookup, absent = table.native, table.index.lookup, table.max_arms
    sampler, scorer = BetaSampler(seed=1), Scorer(1.0, 1.0)
    print(
        f"{'items':>5} {'parser':<9}{'parse':>8}{'fetch':>8}{'sample':>8}{'rank':>8}{'encode':>8}"
        f"{'total':>8}   (us per request)"
    )
    for size in (400, 4000):
        body = (data / f"req{size}.json").read_bytes()
        calls = 2000 if size == 400 else 300
        for name, parser in (("general", parse_general), ("fast", parse_request)):
            request = parser(body, 10_000)
            src, spans = request.items.buffer, request.items.spans
            rows, _ = lookup(src, spans, absent)
            counts = table.counts[rows]
            alpha, beta = counts[:, 0] + 1.0, counts[:, 1] + 1.0
            scores = sampler.sample(alpha, beta)
            order = rank(scores, None)
            times = [
                per_call_us(lambda p=parser, b=body: p(b, 10_000), calls, args.repeat),
                per_call_us(
                    lambda s=src, sp=spans: table.index.lookup(s, sp, table.max_arms),
                    calls,
                    args.repeat,
                ),
                per_call_us(lambda a=alpha, b=beta: sampler.sample(a, b), calls, args.repeat),
                per_call_us(lambda s=scores: rank(s, None), calls, args.repeat),
                per_call_us(
                    lambda s=src, sp=spans, sc=scores, o=order: encode_ranked(s, sp, sc, o),
                    calls,
                    args.repeat,
                ),
            ]
            cells = "".join(f"{t:>8.1f}" for t in times)
            print(f"{size:>5} {name:<9}{cells}{sum(times):>8.1f}")
        request = parse_request(body, 10_000)
        pipeline = per_call_us(
            lambda r=request: scorer.score_table(
                live, r.items.buffer, r.items.spans, r.k, None, 0.0
            ),
            calls,
            args.repeat,
        )
        parse = per_call_us(lambda b=body: parse_request(b, 10_000), calls, args.repeat)
        print(
            f"{size:>5} {'pipeline':<9}{parse:>8.1f}{'(fetch to encode in one call)':>32}"
            f"{parse + pipeline:>8.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
