"""The local mirror of the arm state kept in Redis: where it stands, and its tailer.

Redis holds every arm's counts as of its last change (s, f, t); each bucket's stream
says, in order, which arms changed and to what. The mirror is this replica's live arm
table: the parent loads it whole before forking (mab/store/redis_load.py), then one
tailer follows the streams from the positions the load recorded and sets each
changed arm to its new counts through the table's own `set` (the path the table
has for state kept elsewhere). Setting counts, not adding deltas, makes replaying
an entry harmless: a reload can overlap the stream, and a respawned tailer can
repeat what its predecessor applied but did not yet record.

Exactly one tailer per replica, else two would race on the positions: it is a task
of worker 0's event loop. Not a thread of the parent: the parent forks workers
(again, when one dies), and a fork while a thread holds a lock of the Redis client
or of the logger leaves the child with that lock held forever. A worker is already
a process that owns asyncio connections made after the fork. Its positions live in
`MirrorState`, shared memory made by the parent, so a respawned worker 0 resumes
where the last one stopped; the other workers read the same region for /health.

Each stream entry carries its bucket's sequence number; an entry that does not
follow the last one applied means entries were trimmed away (MAXLEN) or Redis
lost writes (a restart without them in its AOF): that bucket is reloaded whole.
"""

from __future__ import annotations

import asyncio
import mmap
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import structlog

from mab.config import RedisConfig
from mab.errors import ArmTableFull
from mab.native import backend
from mab.state.table import ArmTable
from mab.store.redis_client import UNAVAILABLE, AsyncClient, async_client
from mab.store.redis_layout import (
    N_BUCKETS,
    StreamEntry,
    bucket_keys,
    stream_id,
    unpack_counts,
)

_log = structlog.get_logger("mab.mirror")

BLOCK_MS = 500  # one XREAD waits this long for news: also how often contact is confirmed
READ_COUNT = 1_000  # stream entries per read
SCAN_COUNT = 5_000  # hash fields per HSCAN of a reload
_HEADER = 8  # 8-byte words: last lag, reloads, spare
_LAG, _RELOADS = 0, 1
_WORDS = 5  # per bucket: position (ms, seq), sequence number, last contact, connected

FloatArray = npt.NDArray[np.float64]


class MirrorState:
    """Shared memory, made in the parent: each bucket's stream position (entry id and
    sequence number) and the tailer's contact with Redis for it. Written by the tailer
    only; /health in every worker reads it."""

    def __init__(self, buckets: int = N_BUCKETS) -> None:
        words = _HEADER + _WORDS * buckets
        self._region = mmap.mmap(-1, 8 * words)  # anonymous, MAP_SHARED: seen after fork
        self._u64 = np.frombuffer(self._region, dtype=np.uint64, count=words)
        self._f64 = np.frombuffer(self._region, dtype=np.float64, count=words)
        self.buckets = buckets

    def _at(self, bucket: int) -> int:
        return _HEADER + _WORDS * bucket

    def position(self, bucket: int) -> str:
        at = self._at(bucket)
        return f"{int(self._u64[at])}-{int(self._u64[at + 1])}"

    def seq(self, bucket: int) -> int:
        return int(self._u64[self._at(bucket) + 2])

    def set_position(self, bucket: int, entry_id: bytes | str, seq: int) -> None:
        at = self._at(bucket)
        self._u64[at], self._u64[at + 1] = stream_id(entry_id)
        self._u64[at + 2] = seq

    def contact(self, bucket: int, connected: bool, now: float) -> None:
        """The tailer heard from Redis for `bucket` (or failed to)."""
        at = self._at(bucket)
        if connected:
            self._f64[at + 3] = now
        self._u64[at + 4] = int(connected)

    def connected(self, bucket: int | None = None) -> bool:
        """Whether the tailer's last read of `bucket` (of every bucket) succeeded."""
        buckets = range(self.buckets) if bucket is None else (bucket,)
        return all(self._u64[self._at(b) + 4] for b in buckets)

    @property
    def last_contact(self) -> float:
        """When the tailer last heard from Redis for the bucket it heard of least lately."""
        return min(float(self._f64[self._at(b) + 3]) for b in range(self.buckets))

    @property
    def last_lag(self) -> float:
        return float(self._f64[_LAG])

    @last_lag.setter
    def last_lag(self, seconds: float) -> None:
        self._f64[_LAG] = seconds

    @property
    def reloads(self) -> int:
        return int(self._u64[_RELOADS])

    def count_reload(self) -> None:
        self._u64[_RELOADS] += 1


def set_counts(table: ArmTable, ids: list[str], values: FloatArray) -> int:
    """Set arms to `values` (columns successes, failures, t), the lock held. Returns how
    many arms were left out because they are new and the table is full."""
    if not ids:
        return 0
    src = orjson.dumps(ids)
    spans = backend.find_spans(src, len(ids))
    s, f, t = (np.ascontiguousarray(values[:, i]) for i in range(3))
    try:
        table.set(src, spans, s, f, t)
        return 0
    except ArmTableFull:
        rows, _ = table.native.lookup(src, spans)
        known = np.asarray(rows) != table.max_arms
        kept = [arm for arm, ok in zip(ids, known.tolist(), strict=True) if ok]
        if kept:
            src = orjson.dumps(kept)
            spans = backend.find_spans(src, len(kept))
            table.set(src, spans, s[known], f[known], t[known])
        return len(ids) - len(kept)


def head_of(seq: bytes | None, last: list[Any]) -> tuple[bytes, int]:
    """A bucket's stream position and sequence number from GET seq, then XREVRANGE
    + - COUNT 1 (read in that order, before the hash)."""
    if last:
        entry_id, fields = last[0]
        entry = StreamEntry.parse(fields)
        if entry is not None:
            return entry_id, entry.seq
        return entry_id, int(seq or 0)  # not mab's: skip it
    return b"0-0", int(seq or 0)


class Tailer:
    """Follows every bucket's stream into the table: one task per bucket, since in a
    Cluster one XREAD may only name streams of one slot."""

    def __init__(self, table: ArmTable, state: MirrorState, config: RedisConfig) -> None:
        from prometheus_client import Counter, Histogram

        self._table, self._state, self._config = table, state, config
        self._client: AsyncClient = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lag = Histogram(
            "mab_mirror_lag_seconds",
            "From a /feedback write to Redis to its effect on this replica's mirror",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._reloads = Counter("mab_mirror_reloads", "Buckets of the mirror reloaded whole")
        self._dropped = Counter("mab_mirror_dropped_arms", "Arms not mirrored: over --max-arms")

    async def start(self) -> None:
        self._client = async_client(self._config, socket_timeout=BLOCK_MS / 1000 + 5.0)
        self._tasks = [
            asyncio.create_task(self._follow(bucket)) for bucket in range(self._state.buckets)
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _follow(self, bucket: int) -> None:
        keys = bucket_keys(self._config.prefix, bucket)
        failures = 0
        while True:
            try:
                reply = await self._client.xread(
                    {keys.events: self._state.position(bucket)}, count=READ_COUNT, block=BLOCK_MS
                )
                was_connected = self._state.connected(bucket)
                self._state.contact(bucket, True, time.time())
                if not was_connected and self._state.connected():
                    _log.info("mirror connected to redis: following every stream")
                failures = 0
                if reply and not self._apply(bucket, reply[0][1]):
                    await self._reload(bucket, "the stream skipped entries (trimmed, or lost)")
            except UNAVAILABLE as exc:
                failures += 1
                if self._state.connected():  # the first bucket to lose it says so
                    _log.warning(
                        "mirror lost redis: serving what it has", bucket=bucket, error=repr(exc)
                    )
                self._state.contact(bucket, False, time.time())
                await asyncio.sleep(min(0.02 * 2**failures, 0.5))
            except Exception:  # a bug, or an entry not written by mab: keep the bucket
                _log.exception("mirror: cannot apply a stream entry", bucket=bucket)
                self._state.contact(bucket, False, time.time())  # /health: degraded
                await asyncio.sleep(1.0)

    def _apply(self, bucket: int, entries: list[Any]) -> bool:
        """Apply entries in order; False at the first one that does not follow."""
        expected = self._state.seq(bucket)
        ids: list[str] = []
        values: list[FloatArray] = []
        walls: list[float] = []
        last_id: bytes | None = None
        follows = True
        for entry_id, fields in entries:
            entry = StreamEntry.parse(fields)
            if entry is None or entry.seq != expected + 1:
                follows = False
                break
            expected, last_id = entry.seq, entry_id
            ids.extend(entry.ids)
            values.append(entry.values[:, 2:5])
            walls.append(entry.wall)
        if last_id is not None:
            with self._table.locked():
                dropped = set_counts(self._table, ids, np.concatenate(values))
                self._state.set_position(bucket, last_id, expected)
            now = time.time()
            for wall in walls:
                self._lag.observe(max(now - wall, 0.0))
            self._state.last_lag = max(now - walls[-1], 0.0)
            if dropped:
                self._dropped.inc(dropped)
                _log.error("mirror full: arms not mirrored", arms=dropped, bucket=bucket)
        return follows

    async def _reload(self, bucket: int, reason: str) -> None:
        """Reload one bucket from its hash, from a position read before the hash."""
        keys = bucket_keys(self._config.prefix, bucket)
        seq = await self._client.get(keys.seq)
        last = await self._client.xrevrange(keys.events, count=1)
        position, n = head_of(seq, last)
        cursor, arms = 0, 0
        while True:
            cursor, found = await self._client.hscan(keys.arms, cursor, count=SCAN_COUNT)
            ids = [raw.decode() for raw in found]
            with self._table.locked():
                set_counts(self._table, ids, unpack_counts(list(found.values())))
            arms += len(ids)
            if cursor == 0:
                break
        with self._table.locked():
            self._state.set_position(bucket, position, n)
        self._state.count_reload()
        self._reloads.inc()
        _log.warning("mirror bucket reloaded", bucket=bucket, reason=reason, arms=arms)
