#!/usr/bin/env python3
"""Throughput with feedback in the mix: predict-only rounds against rounds where every
10th request is a POST /feedback of 100 events, on the same server command, alternated
(A B A B ...) on fresh servers, each with a fresh --state-dir (so every batch is fsynced).

    python bench/feedback_mix.py                       # 5 rounds, 400 ids, c=64
    python bench/feedback_mix.py --every 10 --events 100 --rounds 5 --body req400.json

Per round: wrk's requests/s and p99; the server's own latency per path, from its access
log (the measured window only); and the server's CPU per request. Prints the median
ratio mixed / predict-only and the /feedback p99 (issue 14 asks for >= 0.85x).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)
from run import free_port, tree_cpu, wait_healthy  # noqa: E402


def wrk(url: str, env: dict[str, str], conns: int, seconds: int) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(HERE / "feedback_mix.lua")]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, env={**os.environ, **env}, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith('{"requests"'))
    result: dict[str, float] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def server_latencies(log: Path, offset: int) -> dict[str, dict[str, float]]:
    """p50 and p99 of the server's latency_ms per path, from the access log past offset."""
    by_path: dict[str, list[float]] = {}
    with log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if "latency_ms" in line:
                by_path.setdefault(line["path"], []).append(line["latency_ms"])
    return {
        path: {"n": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
        for path, v in by_path.items()
    }


def one_round(args: argparse.Namespace, every: int, body: Path, csv: Path) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory(dir=args.state_parent) as state:
        cmd = args.cmd.format(port=port, catalog=csv, state_dir=state)
        log = Path(state) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                shlex.split(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url)
            env = {
                "MAB_BODY": str(body),
                "MAB_FEEDBACK_EVERY": str(every),
                "MAB_EVENTS": str(args.events),
            }
            wrk(f"{url}/predict", env, args.conns, args.warmup)
            time.sleep(0.2)
            offset = log.stat().st_size
            ps = psutil.Process(proc.pid)
            cpu0 = tree_cpu(ps)
            result = wrk(f"{url}/predict", env, args.conns, args.duration)
            result["cpu_us_per_request"] = (tree_cpu(ps) - cpu0) / result["requests"] * 1e6
            time.sleep(0.5)  # the last loop turn's log lines
            result["server"] = server_latencies(log, offset)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--cmd",
        default=f"{sys.executable} -m mab serve --port {{port}} --catalog {{catalog}}"
        " --state-dir {state_dir}",
        help="server command ({port}, {catalog}, {state_dir})",
    )
    ap.add_argument("--data", type=Path, default=HERE / "data", help="catalog and bodies")
    ap.add_argument("--items", type=int, default=400, help="ids per /predict")
    ap.add_argument("--every", type=int, default=10, help="every Nth request is /feedback")
    ap.add_argument("--events", type=int, default=100, help="events per /feedback")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--state-parent", default=None, help="where the state dirs go (a disk)")
    args = ap.parse_args()
    data = catalog.write(args.data, sizes=(args.items,))
    csv, body = data / "arms.csv", data / f"req{args.items}.json"

    rows = []
    for r in range(args.rounds):
        only = one_round(args, 0, body, csv)
        mixed = one_round(args, args.every, body, csv)
        rows.append({"predict_only": only, "mixed": mixed})
        print(json.dumps({"round": r + 1, **rows[-1]}), file=sys.stderr, flush=True)

    def med(key: str, f: object) -> float:
        return statistics.median(f(row[key]) for row in rows)  # type: ignore[operator]

    fb = [row["mixed"]["server"].get("/feedback", {}).get("p99_ms", float("nan")) for row in rows]
    summary = {
        "rps_ratio_mixed_over_predict_only_median": round(
            statistics.median(row["mixed"]["rps"] / row["predict_only"]["rps"] for row in rows), 3
        ),
        "predict_only_rps_median": round(med("predict_only", lambda x: x["rps"])),
        "mixed_rps_median": round(med("mixed", lambda x: x["rps"])),
        "feedback_server_p99_ms": [round(x, 2) for x in fb],
        "mixed_predict_server_p99_ms": [
            round(row["mixed"]["server"].get("/predict", {}).get("p99_ms", float("nan")), 2)
            for row in rows
        ],
        "predict_only_server_p99_ms": [
            round(row["predict_only"]["server"]["/predict"]["p99_ms"], 2) for row in rows
        ],
        "wrk_p99_ms": {
            "predict_only": [row["predict_only"]["p99_us"] / 1e3 for row in rows],
            "mixed": [row["mixed"]["p99_us"] / 1e3 for row in rows],
        },
        "errors": sum(
            row[k]["non2xx"] + row[k]["socket_errors"]
            for row in rows
            for k in ("predict_only", "mixed")
        ),
    }
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
