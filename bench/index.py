#!/usr/bin/env python3
"""The fetch stage of the fused /predict call (id lookup + count gather), warm and cold.

    python bench/index.py [--calls 1000] [--thrash-mb 32]

Builds the embedded store's arm table and a scorer as the server does, from the
benchmark catalog and bodies of bench/catalog.py (100k arms; 400 and 4,000 ids), and
times `Scorer.score_table`: `fetch` is the native fetch_s (lookup and gather), `call`
the whole Python call. In the server other work evicts the index between requests, so
the cold rows read a `--thrash-mb` buffer (untimed) before each call. Prints the
median and the best of `--calls` calls, in microseconds per request.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)

from mab.catalog import load_csv  # noqa: E402
from mab.native.scoring import Scorer  # noqa: E402
from mab.request import parse_request  # noqa: E402
from mab.store.embedded import EmbeddedStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="timed calls per row")
    ap.add_argument("--thrash-mb", type=int, default=32, help="buffer read between cold calls")
    ap.add_argument("--data", type=Path, default=HERE / "data")
    args = ap.parse_args()
    data = catalog.write(args.data)
    store = EmbeddedStore(load_csv(data / "arms.csv"))
    scorer = Scorer(1.0, 1.0)
    # One int64 per cache line: summing the column reads every line of the buffer.
    thrash = np.ones((args.thrash_mb << 20) // 64, dtype=np.dtype((np.int64, 8)))[:, 0]
    print(
        f"{'items':>5} {'cache':<6}{'fetch':>9}{'best':>9}{'call':>9}{'best':>9}   (us per request)"
    )
    for size in (400, 4000):
        body = (data / f"req{size}.json").read_bytes()
        request = parse_request(body, 10_000)
        spans, k = request.items.spans, request.k
        for cache in ("warm", "cold"):
            fetch, call = [], []
            for _ in range(args.calls + 10):
                if cache == "cold":
                    thrash.sum()
                started = time.perf_counter()
                _, stats = scorer.score_table(store.table, body, spans, k, None)
                call.append(time.perf_counter() - started)
                fetch.append(stats.fetch_s)
            del fetch[:10], call[:10]  # warm-up
            cells = [statistics.median(fetch), min(fetch), statistics.median(call), min(call)]
            print(f"{size:>5} {cache:<6}" + "".join(f"{t * 1e6:>9.1f}" for t in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
