#!/usr/bin/env python3
"""What gRPC's Python client costs to read one legacy 100-id stream (101 messages).

    python bench/vertex_client_floor.py [--runs 3] [--fetches 40]

The floor under `mab`'s legacy Featurestore reader: no proto parsing, no store,
just a raw stub reading the raw messages of `StreamingReadFeatureValues` from
`mab fake-vertex` (in its own process). Each variant runs in a fresh process of
its own (no other client's threads), `--runs` times, alternating:

  aio paced        grpc.aio (what mab's async client path uses), messages read
                   as the fake sends them, one at a time
  aio buffered     the same, first read after BUFFER_S, once the fake has sent
                   the whole stream (as a remote server writing faster than the
                   client reads would have)
  sync paced       a synchronous stub with gRPC's SingleThreadedUnaryStream
                   option, read on the calling thread: not what mab uses (the
                   design asks for the async client), for comparison
  sync buffered    the same, first read after BUFFER_S

Reported: median process CPU and calling-thread CPU per 100 ids. The fake's CPU
is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("aio paced", "aio buffered", "sync paced", "sync buffered")
ENTITY_TYPE = "projects/bench/locations/us-central1/featurestores/fs/entityTypes/arms"
METHOD = "/google.cloud.aiplatform.v1.FeaturestoreOnlineServingService/StreamingReadFeatureValues"
BUFFER_S = 0.02  # the fake sends a 100-id stream in well under this


def _measure(variant: str, address: str, fetches: int) -> tuple[float, float]:
    """Median (process, thread) CPU seconds of one 100-id read, in this process."""
    os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client")  # as mab does
    import grpc
    from google.cloud.aiplatform_v1.types import featurestore_online_service as types

    request_type = types.StreamingReadFeatureValuesRequest.pb()
    request = request_type(
        entity_type=ENTITY_TYPE,
        entity_ids=[f"item_{i:07d}" for i in range(0, 9700, 97)],
        feature_selector={"id_matcher": {"ids": ["successes", "failures"]}},
    )
    wait = BUFFER_S if variant.endswith("buffered") else 0.0
    samples: list[tuple[float, float]] = []
    if variant.startswith("aio"):
        import uvloop

        async def run() -> None:
            channel = grpc.aio.insecure_channel(address)
            stream = channel.unary_stream(METHOD, request_serializer=request_type.SerializeToString)
            for i in range(fetches + 3):  # 3 to warm up
                process0, thread0 = time.process_time(), time.thread_time()
                call = stream(request, timeout=5)
                if wait:
                    await asyncio.sleep(wait)
                messages = [message async for message in call]
                assert len(messages) == 101
                if i >= 3:
                    samples.append((time.process_time() - process0, time.thread_time() - thread0))
            await channel.close()

        uvloop.run(run())
    else:
        option = grpc.experimental.ChannelOptions.SingleThreadedUnaryStream
        channel = grpc.insecure_channel(address, options=[(option, 1)])
        stream = channel.unary_stream(METHOD, request_serializer=request_type.SerializeToString)
        for i in range(fetches + 3):
            process0, thread0 = time.process_time(), time.thread_time()
            call = stream(request, timeout=5)
            if wait:
                time.sleep(wait)
            assert sum(1 for _ in call) == 101
            if i >= 3:
                samples.append((time.process_time() - process0, time.thread_time() - thread0))
        channel.close()
    return (
        statistics.median(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per variant")
    ap.add_argument("--fetches", type=int, default=40, help="reads per process")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one child
    ap.add_argument("--address", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        process, thread = _measure(args.variant, args.address, args.fetches)
        print(f"{process} {thread}")
        return 0

    sys.path.insert(0, str(HERE))
    import catalog  # bench/catalog.py
    from vertex_fetch import _free_port, start_fake

    data = catalog.write(HERE / "data")
    port = _free_port()
    fake = start_fake(data, port)
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    try:
        for _ in range(args.runs):
            for variant in VARIANTS:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--variant",
                        variant,
                        "--address",
                        f"127.0.0.1:{port}",
                        "--fetches",
                        str(args.fetches),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                results[variant].append((float(out[0]), float(out[1])))
    finally:
        fake.terminate()
        fake.wait(10)
    print("| variant | process CPU ms / 100 ids (runs) | calling-thread CPU ms / 100 ids |")
    print("|---|---:|---:|")
    for variant, rows in results.items():
        process = ", ".join(f"{p * 1e3:.2f}" for p, _ in rows)
        thread = ", ".join(f"{t * 1e3:.2f}" for _, t in rows)
        print(f"| {variant} | {process} | {thread} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
