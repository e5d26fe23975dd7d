#!/usr/bin/env python3
"""Cost of fetching counts from the Vertex AI online serving APIs, client side.

    python bench/vertex_fetch.py                  # ~1 minute on 2 cores
    python bench/vertex_fetch.py --rounds 50 --json out.json

Starts `mab fake-vertex` in its own process on the bench catalog, then measures,
interleaved round by round (A B C ... A B C) so drift on a shared machine hits all:

  legacy Featurestore, StreamingReadFeatureValues, 100 ids (101 messages):
    proto-plus    the library client's method, fields read through proto-plus
    ._pb          the library client's method, fields read on the raw protobuf
    raw stub      a grpc.aio stub on the client's own channel, the library's
                  protobuf classes (what mab uses)
    mab store     VertexFeaturestoreStore.fetch: raw stub + fan-out, arrays
  new Feature Store through the mab store: v1 FetchFeatureValues (a unary call
  per id) and v1beta1 StreamingFetchFeatureValues (one request per 100 ids).

Per variant: median and p90 wall time per fetch, and CPU per 100 ids fetched,
of the event-loop thread (time.thread_time) and of the whole process (gRPC's own
threads included). The fake's CPU is separate and not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)

from mab.config import VertexConfig  # noqa: E402
from mab.store.vertex import VertexFeaturestoreStore, VertexOnlineStore  # noqa: E402

ENTITY_TYPE = "projects/bench/locations/us-central1/featurestores/fs/entityTypes/arms"
FEATURE_VIEW = "projects/bench/locations/us-central1/featureOnlineStores/os/featureViews/arms"
FEATURES = ("successes", "failures")

Fetch = Callable[[list[str]], Awaitable[Any]]


def start_fake(data: Path, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mab", "fake-vertex", "--catalog", str(data / "arms.csv")]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"fake-vertex did not start: {line}")
    return proc


class LibraryClient:
    """The library's own async client and method, as its docs show it."""

    def __init__(self, address: str) -> None:
        import grpc
        from google.cloud import aiplatform_v1
        from google.cloud.aiplatform_v1.services.featurestore_online_serving_service import (
            transports,
        )

        channel = grpc.aio.insecure_channel(address)
        transport = transports.FeaturestoreOnlineServingServiceGrpcAsyncIOTransport(channel=channel)
        self.client = aiplatform_v1.FeaturestoreOnlineServingServiceAsyncClient(transport=transport)
        self.types = aiplatform_v1

    def request(self, ids: list[str]) -> Any:
        return self.types.StreamingReadFeatureValuesRequest(
            entity_type=ENTITY_TYPE,
            entity_ids=ids,
            feature_selector={"id_matcher": {"ids": list(FEATURES)}},
        )

    async def proto_plus(self, ids: list[str]) -> dict[str, tuple[float, float]]:
        found = {}
        stream = await self.client.streaming_read_feature_values(
            request=self.request(ids), timeout=5
        )
        async for response in stream:
            if "entity_view" not in response:
                continue  # the header
            view = response.entity_view
            s, f = view.data[0], view.data[1]
            if "value" in s and "value" in f:  # empty cells read 0 without this check
                found[view.entity_id] = (float(s.value.int64_value), float(f.value.int64_value))
        return found

    async def raw_pb(self, ids: list[str]) -> dict[str, tuple[float, float]]:
        found = {}
        stream = await self.client.streaming_read_feature_values(
            request=self.request(ids), timeout=5
        )
        async for response in stream:
            pb = response._pb
            if not pb.HasField("entity_view"):
                continue
            view = pb.entity_view
            s, f = view.data[0], view.data[1]
            if s.HasField("value") and f.HasField("value"):
                found[view.entity_id] = (float(s.value.int64_value), float(f.value.int64_value))
        return found

    async def close(self) -> None:
        await self.client.transport.close()


async def measure(address: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    def config(**kw: Any) -> VertexConfig:
        return VertexConfig(
            entity_type=ENTITY_TYPE,
            feature_view=FEATURE_VIEW,
            endpoint=address,
            insecure=True,
            **kw,
        )

    legacy = VertexFeaturestoreStore(config())
    online = VertexOnlineStore(config())
    online_streaming = VertexOnlineStore(config(streaming=True))
    library = LibraryClient(address)
    stores = [legacy, online, online_streaming]
    for store in stores:
        await store.start()
    # The raw stub alone: mab's reader for one chunk, without the store around it.
    raw_read = legacy._reader.read

    ids = [f"item_{i:07d}" for i in range(0, 100 * args.stride * 10, args.stride)]
    hundred, thousand = ids[:100], ids[:1000]
    variants: list[tuple[str, int, Fetch, int]] = [
        ("legacy: proto-plus", 100, library.proto_plus, 1),
        ("legacy: ._pb", 100, library.raw_pb, 1),
        ("legacy: raw stub", 100, lambda i: raw_read(i, 5.0), 1),
        ("legacy: mab store", 100, legacy.fetch, 1),
        ("legacy: mab store", 1000, legacy.fetch, 1),
        ("online v1 unary: mab store", 100, online.fetch, 4),
        ("online v1beta1 stream: mab store", 100, online_streaming.fetch, 1),
        ("online v1beta1 stream: mab store", 1000, online_streaming.fetch, 1),
    ]
    # Every variant must read the same counts: the check that the comparison is fair.
    reference = await library.proto_plus(hundred)
    for name, size, fetch, _ in variants:
        result = await fetch(hundred if size == 100 else thousand)  # also warms up
        if isinstance(result, dict):
            assert result == reference, name
        else:
            assert result.unknown == 0, name
    walls: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    cpu: dict[int, list[float]] = {i: [0.0, 0.0, 0.0] for i in range(len(variants))}
    for round_ in range(args.rounds):
        for index, (_name, size, fetch, every) in enumerate(variants):
            if round_ % every:
                continue  # the slow unary path runs every 4th round only
            batch = hundred if size == 100 else thousand
            thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
            await fetch(batch)
            wall = time.perf_counter() - wall0
            walls[index].append(wall)
            cpu[index][0] += time.thread_time() - thread0
            cpu[index][1] += time.process_time() - process0
            cpu[index][2] += size
    for store in stores:
        await store.close()
    await library.close()
    rows = []
    for index, (name, size, _fetch, _every) in enumerate(variants):
        w = sorted(walls[index])
        thread, process, fetched = cpu[index]
        rows.append(
            {
                "variant": name,
                "ids": size,
                "fetches": len(w),
                "median_ms": statistics.median(w) * 1e3,
                "p90_ms": w[int(0.9 * (len(w) - 1))] * 1e3,
                "loop_cpu_ms_per_100": thread / fetched * 100 * 1e3,
                "process_cpu_ms_per_100": process / fetched * 100 * 1e3,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | ids | fetches | median ms | p90 ms "
        "| loop-thread CPU ms / 100 ids | process CPU ms / 100 ids |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['ids']} | {r['fetches']} | {r['median_ms']:.2f} "
            f"| {r['p90_ms']:.2f} | {r['loop_cpu_ms_per_100']:.2f} "
            f"| {r['process_cpu_ms_per_100']:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100, help="fetches per variant")
    ap.add_argument("--stride", type=int, default=97, help="spacing of the ids in the catalog")
    ap.add_argument("--port", type=int, default=0, help="port of the fake (0 = a free one)")
    ap.add_argument("--data", type=Path, default=HERE / "data", help="catalog directory")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    data = catalog.write(args.data)
    port = args.port or _free_port()
    fake = start_fake(data, port)
    try:
        rows = uvloop.run(measure(f"127.0.0.1:{port}", args))
    finally:
        fake.terminate()
        fake.wait(10)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
