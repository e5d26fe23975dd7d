#!/usr/bin/env python3
"""What the number of buckets costs a /feedback batch in Redis (mab/store/redis_layout.py).

    python bench/redis_buckets.py                 # 100-event batches, 300 of each
    python bench/redis_buckets.py --events 10 --batches 1000

Starts its own redis-server on a free loopback port (AOF off: the script's CPU, not
the disk), then, for each bucket count, sends batches of --events distinct arms the
way the redis store does: one EVALSHA of mab/store/redis_feedback.lua per bucket the
batch touches, all in one pipeline. Reports the script calls per batch, Redis' own
time in the scripts per batch (INFO commandstats) and the client's wall time per
batch (one process, sequential).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
import zlib

import redis

from mab.store.redis_layout import FEEDBACK_LUA, bucket_keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buckets", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--events", type=int, default=100, help="events per batch")
    parser.add_argument("--batches", type=int, default=300, help="batches per bucket count")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make redis)"
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", scratch]
        server = subprocess.Popen([*cmd, "--save", "", "--appendonly", "no"])
        try:
            client = redis.Redis(port=port)
            for _ in range(500):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.01)
            sha = client.script_load(FEEDBACK_LUA)
            for buckets in args.buckets:
                run(client, sha, buckets, args.events, args.batches)
        finally:
            server.terminate()
            server.wait(10)


def run(client: redis.Redis, sha: str, buckets: int, events: int, batches: int) -> None:
    client.config_resetstat()
    started = time.perf_counter()
    for k in range(batches):
        groups: dict[int, list[str]] = {}
        for i in range(events):
            arm = f"arm-{(k * 37 + i * 101) % 100_000}"
            args = groups.setdefault(zlib.crc32(arm.encode()) % buckets, [])
            args += (arm, "1.0", "0.0", "")
        pipe = client.pipeline(transaction=False)
        for bucket, args in groups.items():
            keys = bucket_keys(f"bench{buckets}", bucket).script_keys()
            head = [repr(1000.0 + k), repr(time.time()), "0.0", "86400.0", "62500", "100000"]
            pipe.evalsha(sha, len(keys), *keys, *head, *args)
        pipe.execute()
    wall = (time.perf_counter() - started) / batches
    stats = client.info("commandstats")["cmdstat_evalsha"]
    print(
        f"buckets {buckets:4d}: {stats['calls'] / batches:6.1f} script calls per batch, "
        f"{stats['usec'] / batches:7.1f} us of Redis per batch, "
        f"{wall * 1e3:6.2f} ms per batch at the client"
    )


if __name__ == "__main__":
    main()
