#!/usr/bin/env python3
"""Mirror lag: two replicas on one Redis; feedback on A, its effect on B.

    python bench/mirror_lag.py                 # 1,000 batches of 10 events, one at a time
    python bench/mirror_lag.py --batches 5000 --events 100

Starts a redis-server on a free loopback port (its own directory, AOF on) and two
`mab serve --store redis` replicas (2 workers each), posts the batches to A one after
another, then reads B's `mab_mirror_lag_seconds` histogram (from the write to Redis, by
the writer's clock, to B's mirror) and prints its count and the bucket bounds under
which 50, 99 and 100% of the batches fell. Issue 15 asks for a p99 <= 50 ms on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import free_port, wait_healthy  # noqa: E402


def post(url: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def lag_histogram(url: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of B's mab_mirror_lag_seconds."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'^mab_mirror_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)
    return [(float(le), float(count)) for le, count in found]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batches", type=int, default=1000)
    ap.add_argument("--events", type=int, default=10)
    args = ap.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make test installs it)")
    work = Path(tempfile.mkdtemp(prefix="mab-lag-"))
    redis_port = free_port()
    redis = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(redis_port), "--dir", str(work),
         "--save", "", "--appendonly", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    replicas = []
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{redis_port}/0"
        for _ in range(2):
            port = free_port()
            cmd = [sys.executable, "-m", "mab", "serve", "--port", str(port), "--workers", "2"]
            cmd += ["--store", "redis", "--redis-url", url, "--no-access-log"]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            replicas.append((proc, f"http://127.0.0.1:{port}"))
            wait_healthy(replicas[-1][1])
        (_, a), (_, b) = replicas
        for k in range(args.batches):
            events = [
                {"id": f"arm_{(k * 31 + i) % 5000}", "reward": i % 2, "event_id": f"lag-{k}-{i}"}
                for i in range(args.events)
            ]
            assert post(f"{a}/feedback", {"events": events}) == 200
        time.sleep(2)  # B's last entries, and its workers' last metrics flush
        histogram = lag_histogram(b)
    finally:
        for proc, _ in replicas:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(work)
    total = histogram[-1][1] if histogram else 0.0

    def under(share: float) -> float | None:
        return next((le for le, count in histogram if count >= share * total), None)

    print(json.dumps({
        "batches": args.batches,
        "stream_entries_applied_on_b": total,
        "p50_under_s": under(0.5), "p99_under_s": under(0.99), "max_under_s": under(1.0),
        "histogram": histogram,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
