"""Deterministic benchmark data: a 100k-arm catalog and request bodies.

Same recipe as the peers' `make_catalog.py` (seeded `random`, ids `item_0000000`),
so `mab` and the Go peer serve identical data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path


def write(out: Path, arms: int = 100_000, sizes: tuple[int, ...] = (400, 4000)) -> Path:
    """Write `arms.csv` and `req{N}.json` into `out` (once); return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".done-v2-{arms}-{'-'.join(map(str, sizes))}"
    if marker.exists():
        return out
    rnd = random.Random(42)
    ids = [f"item_{i:07d}" for i in range(arms)]
    with open(out / "arms.csv", "w") as handle:
        handle.write("arm_id,successes,failures\n")
        for arm in ids:
            trials = rnd.randint(500, 50_000)
            ctr = rnd.betavariate(2, 60)
            successes = int(trials * ctr)
            handle.write(f"{arm},{successes},{trials - successes}\n")
    for n in sizes:
        items = rnd.sample(ids, n)
        rnd.shuffle(items)
        body = {"user_id": "user_1", "items": items}
        (out / f"req{n}.json").write_text(json.dumps(body))
    marker.touch()
    return out
