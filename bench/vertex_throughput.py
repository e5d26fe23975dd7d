#!/usr/bin/env python3
"""/predict throughput with the Vertex store against the local fake, next to the
embedded store: wrk at one concurrency, servers in alternation, medians of rounds.

    python bench/vertex_throughput.py [--rounds 3] [--duration 5] [--conns 64]

Servers: the embedded store; vertex-featurestore (StreamingReadFeatureValues)
against `mab fake-vertex` (0 ms delay, its own process, its CPU not counted) with
the cache off, and with the cache on and 95% of each request's ids hot (380 of 400
repeat, 20 are new on every request: bench/predict_mixed.lua); vertex-online with
--vertex-streaming (the v1beta1 batch read). CPU is the server's process tree.
The fake shares the 2 cores: at high concurrency it, not mab, may be the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402
from run import free_port, started  # noqa: E402
from vertex_fetch import start_fake  # noqa: E402

ENTITY_TYPE = "projects/bench/locations/us-central1/featurestores/bench/entityTypes/arms"
FEATURE_VIEW = "projects/bench/locations/us-central1/featureOnlineStores/bench/featureViews/arms"


def wrk(url: str, script: Path, env: dict[str, str], conns: int, seconds: float) -> dict:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["-s", str(script), f"{url}/predict"]
    out = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **env}, check=True
    ).stdout
    result: dict = json.loads(next(x for x in out.splitlines() if x.startswith('{"requests"')))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    args = ap.parse_args()

    data = catalog.write(args.data)
    body = data / "req400.json"
    items = json.loads(body.read_text())["items"]
    prefix = data / "req400_hot380.prefix"
    prefix.write_text(json.dumps({"user_id": "user_1", "items": items[:380]})[:-2] + ",")
    plain = (HERE / "predict.lua", {"MAB_BODY": str(body)})
    mixed = (HERE / "predict_mixed.lua", {"MAB_BODY_PREFIX": str(prefix), "MAB_FRESH": "20"})

    fake_port = free_port()
    fake = start_fake(data, fake_port)
    mab = f"{sys.executable} -m mab serve --port {{port}} --log-level warning"
    endpoint = f"--vertex-insecure --vertex-endpoint 127.0.0.1:{fake_port}"
    vertex = f"{mab} --store vertex-featurestore {endpoint} --vertex-entity-type {ENTITY_TYPE}"
    online = (
        f"{mab} --store vertex-online --vertex-streaming {endpoint} "
        f"--vertex-feature-view {FEATURE_VIEW}"
    )
    servers = [
        ("embedded", f"{mab} --catalog {{catalog}}", plain),
        ("featurestore, no cache", vertex, plain),
        ("featurestore, 95% hits", f"{vertex} --cache-ttl 3600 --cache-size 100000", mixed),
        ("online streaming", online, plain),
    ]
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in servers}
    try:
        for round_ in range(args.rounds):
            for name, cmd, (script, env) in servers:
                print(
                    f"\r[round {round_ + 1}/{args.rounds}] {name} ...      ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                with started(name, cmd, data) as target:
                    wrk(target.url, script, env, args.conns, args.warmup)
                    cpu0 = target.cpu_seconds()
                    result = wrk(target.url, script, env, args.conns, args.duration)
                    cpu = target.cpu_seconds() - cpu0
                result["cpu_us_per_item"] = cpu / max(1, result["requests"] * 400) * 1e6
                rows[name].append(result)
        print(file=sys.stderr)
    finally:
        fake.terminate()
        fake.wait(10)

    print(f"400 ids per request, wrk -t1 -c{args.conns}, medians of {args.rounds} rounds")
    print(
        f"{'server':<24}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'mab CPU ms / 100 ids':>22}"
    )
    for name, results in rows.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        errors = sum(r["non2xx"] + r["socket_errors"] for r in results)
        print(
            f"{name:<24}{med['rps']:>8.0f}{med['p50_us'] / 1e3:>9.2f}{med['p99_us'] / 1e3:>9.2f}"
            f"{errors:>8}{med['cpu_us_per_item'] * 100 / 1e3:>22.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
