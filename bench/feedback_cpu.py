#!/usr/bin/env python3
"""In-process CPU of a /feedback batch: check the events, apply them to a table of
100,000 arms, build the journal record (no disk), in microseconds per batch.

    python bench/feedback_cpu.py [--batches 1000] [--events 100]

Each event has its own event_id, as producers send them. bench/RESULTS.md, section 8.
"""

from __future__ import annotations

import argparse
import time

import orjson

from mab.catalog import demo_catalog
from mab.feedback import apply_batch, parse_feedback
from mab.state.durable import NoLog
from mab.state.table import ArmTable


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    catalog = demo_catalog(100_000)
    now = time.time()
    table = ArmTable(
        catalog.ids,
        catalog.counts,
        max_arms=1_000_000,
        dedupe_capacity=1_000_000,
        half_life=0.0,
        t0=now,
        updated=now,
    )
    bodies = [
        orjson.dumps(
            {
                "events": [
                    {
                        "id": f"item_{(k * 7 + i * 13) % 100_000:07d}",
                        "reward": (k + i) % 2,
                        "event_id": f"t-{k}-{i}",
                    }
                    for i in range(args.events)
                ]
            }
        )
        for k in range(args.batches * args.repeat)
    ]
    for r in range(args.repeat):
        batch = bodies[r * args.batches : (r + 1) * args.batches]
        started = time.perf_counter()
        for body in batch:
            apply_batch(table, NoLog(), time.time(), 86_400.0, parse_feedback(body, 10_000))
        total = (time.perf_counter() - started) / len(batch) * 1e6
        started = time.perf_counter()
        for body in batch:
            parse_feedback(body, 10_000)
        check = (time.perf_counter() - started) / len(batch) * 1e6
        print(f"{total:.0f} us a batch of {args.events}, of which checking the events {check:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
