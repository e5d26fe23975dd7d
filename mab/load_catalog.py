"""`mab load-catalog`: bulk-load a CSV catalog (arm_id,successes,failures) into the
redis store's bucket hashes.

Each arm is set to the file's counts as of now (its earlier counts in Redis are
replaced). Arms go in chunks of one bucket, each set by a script that also appends
the chunk to the bucket's stream (mab/store/redis_set.lua), so replicas already
running see the load in order with /feedback; the chunks of all buckets are
pipelined. A progress line goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mab.config import RedisConfig
from mab.errors import StartupError

if TYPE_CHECKING:  # the CLI imports this module for its flags: redis-py only when run
    from mab.store.redis_client import SyncClient

CHUNK = 1_000  # arms per script call: one call's ARGV and stream entry stay small
PIPELINE = 16  # calls per round trip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument("file", type=Path, metavar="FILE", help="CSV arm_id,successes,failures")
    parser.add_argument(
        "--redis-url",
        default=env.get("MAB_REDIS_URL"),
        required="MAB_REDIS_URL" not in env,
        metavar="URL",
        help="redis://HOST:PORT/DB or rediss://... [env MAB_REDIS_URL]",
    )
    parser.add_argument(
        "--redis-prefix",
        default=env.get("MAB_REDIS_PREFIX", "mab"),
        help="key prefix, as `mab serve` is given it (default: mab) [env MAB_REDIS_PREFIX]",
    )
    parser.add_argument(
        "--redis-cluster",
        action=argparse.BooleanOptionalAction,
        default=env.get("MAB_REDIS_CLUSTER", "").lower() in {"1", "true", "yes", "on"},
        help="the URL names a node of a Redis Cluster (detected when not given) "
        "[env MAB_REDIS_CLUSTER]",
    )
    parser.add_argument(
        "--half-life",
        type=float,
        default=0.0,
        help="the --half-life the replicas will serve with, recorded when the prefix is "
        "new (default: 0, no decay)",
    )


def _chunks(
    ids: list[str], successes: list[float], failures: list[float]
) -> Iterator[tuple[int, list[str]]]:
    """(bucket, ARGV tail) per chunk of at most CHUNK arms of one bucket."""
    from mab.store.redis_layout import bucket_of

    pending: dict[int, list[str]] = {}
    for arm, s, f in zip(ids, successes, failures, strict=True):
        bucket = bucket_of(arm)
        args = pending.setdefault(bucket, [])
        args += (arm, repr(s), repr(f))
        if len(args) >= 3 * CHUNK:
            yield bucket, pending.pop(bucket)
    yield from pending.items()


def load(client: SyncClient, prefix: str, path: Path, maxlen: int) -> int:
    """Set every arm of the CSV at `path`; returns how many."""
    from mab.catalog import load_csv
    from mab.store.redis_layout import SET_LUA, bucket_keys

    catalog = load_csv(path)
    total = len(catalog)
    sha = client.script_load(SET_LUA)  # on every master, in a Cluster
    done, started, shown = 0, time.monotonic(), 0.0
    t, wall = repr(time.time()), repr(time.time())
    chunks = _chunks(catalog.ids, catalog.successes[:-1].tolist(), catalog.failures[:-1].tolist())
    batch: list[tuple[int, list[str]]] = []

    def flush() -> None:
        nonlocal done, shown
        pipe = client.pipeline(transaction=False)
        for bucket, args in batch:
            keys = bucket_keys(prefix, bucket).script_keys()
            pipe.evalsha(sha, len(keys), *keys, t, wall, str(maxlen), *args)
        done += sum(pipe.execute())
        batch.clear()
        now = time.monotonic()
        if now - shown >= 0.2 or done == total:
            shown = now
            rate = done / max(now - started, 1e-9)
            print(
                f"\rloading arms: {done:,}/{total:,} ({100 * done / max(total, 1):.0f}%), "
                f"{rate:,.0f} arms/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    for chunk in chunks:
        batch.append(chunk)
        if len(batch) >= PIPELINE:
            flush()
    if batch:
        flush()
    print(file=sys.stderr)
    return done


def run(args: argparse.Namespace) -> int:
    from mab.store.redis_client import UNAVAILABLE, sync_client
    from mab.store.redis_layout import N_BUCKETS
    from mab.store.redis_load import ensure_layout, resolve_mode

    config = replace(
        RedisConfig(), url=args.redis_url, prefix=args.redis_prefix, cluster=args.redis_cluster
    )
    config = resolve_mode(config)
    client = sync_client(config, socket_timeout=60.0)
    started = time.monotonic()
    try:
        ensure_layout(client, config.prefix, args.half_life)
        arms = load(client, config.prefix, args.file, config.stream_maxlen)
    except UNAVAILABLE as exc:
        raise StartupError(f"cannot load into redis: {exc!r}") from None
    finally:
        client.close()
    print(
        f"loaded {arms:,} arms into {N_BUCKETS} buckets of prefix {config.prefix!r} in "
        f"{time.monotonic() - started:.1f} s"
    )
    return 0
