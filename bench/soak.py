#!/usr/bin/env python3
"""Soak: steady mixed load for minutes, and the memory of the whole server tree.

    python bench/soak.py                       # 5 minutes, c=32, 400 ids, 10% /feedback
    python bench/soak.py --minutes 1 --png bench/soak.png

Starts `mab serve` (with --state-dir in a temp dir), drives it with wrk and
bench/feedback_mix.lua in one-minute stretches, and samples the RSS (and PSS, which
counts a page shared by the workers once) of the parent and its workers every few
seconds. Prints the growth after the warm-up (the first minute): issue 16 asks for
less than 5%. Requests, errors and the RSS curve go to the terminal and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)
from run import free_port, wait_healthy  # noqa: E402


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """RSS and PSS of the process and its children, in bytes."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--warmup-minutes", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--every", type=int, default=10, help="every Nth request is /feedback")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--png", type=Path, default=None, help="plot RSS and PSS over time")
    ap.add_argument("--cmd", default=f"{sys.executable} -m mab serve")
    args = ap.parse_args()
    data = catalog.write(args.data, sizes=(args.items,))
    port = free_port()
    samples: list[tuple[float, int, int]] = []
    totals = {"requests": 0, "errors": 0}
    with tempfile.TemporaryDirectory() as state:
        cmd = [
            *shlex.split(args.cmd),
            *("--port", str(port), "--catalog", str(data / "arms.csv")),
            *("--state-dir", state, "--no-access-log"),
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            ps = psutil.Process(proc.pid)
            started = time.monotonic()
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(args.sample_s):
                    rss, pss = tree_memory(ps)
                    samples.append((time.monotonic() - started, rss, pss))
                    done = samples[-1][0] / (args.minutes * 60)
                    bar = "#" * int(30 * min(1.0, done))
                    print(
                        f"\r[{bar:<30}] {samples[-1][0]:6.0f} s  RSS {rss / 2**20:7.1f} MiB  "
                        f"PSS {pss / 2**20:7.1f} MiB  requests {totals['requests']:,}",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            env = {
                **os.environ,
                "MAB_BODY": str(data / f"req{args.items}.json"),
                "MAB_FEEDBACK_EVERY": str(args.every),
                "MAB_EVENTS": "100",
            }
            remaining = args.minutes * 60
            while remaining > 0:
                seconds = int(min(60, remaining))
                lua = str(HERE / "feedback_mix.lua")
                out = subprocess.run(
                    ["wrk", "-t1", f"-c{args.conns}", f"-d{seconds}s", "-s", lua, f"{url}/predict"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                ).stdout
                line = json.loads(next(x for x in out.splitlines() if x.startswith("{")))
                totals["requests"] += line["requests"]
                totals["errors"] += line["non2xx"] + line["socket_errors"]
                remaining -= seconds
            stop.set()
            sampler.join()
            print(file=sys.stderr)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    after = [s for s in samples if s[0] >= args.warmup_minutes * 60]
    if len(after) < 2:
        print("too short to judge growth after the warm-up")
        return 1
    first, last = after[0], after[-1]
    peak = max(s[1] for s in after)
    summary = {
        "minutes": args.minutes,
        "requests": totals["requests"],
        "errors": totals["errors"],
        "rss_mib_after_warmup": round(first[1] / 2**20, 1),
        "rss_mib_end": round(last[1] / 2**20, 1),
        "rss_mib_peak": round(peak / 2**20, 1),
        "rss_growth": round(last[1] / first[1] - 1, 4),
        "pss_growth": round(last[2] / first[2] - 1, 4),
    }
    print(json.dumps(summary, indent=1))
    if args.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([s[0] for s in samples], [s[1] / 2**20 for s in samples], label="RSS")
        ax.plot([s[0] for s in samples], [s[2] / 2**20 for s in samples], label="PSS")
        ax.axvline(args.warmup_minutes * 60, color="grey", linestyle=":", label="end of warm-up")
        ax.set_xlabel("seconds")
        ax.set_ylabel("MiB, parent + workers")
        ax.set_title(f"mab under mixed load (c={args.conns}, 1 in {args.every} is /feedback)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
