"""The redis store: the arm state lives in Redis (or a Redis Cluster), shared by every
replica; each replica serves /predict from its own mirror of it (mab/state/mirror.py).

/feedback: validate the whole batch (a 400 changes nothing), refuse it if its new arms
would not fit this replica's mirror (507), then run one script per bucket the batch
touches (mab/store/redis_feedback.lua), all in one pipeline: each script dedupes
event ids, adds the counts (decayed as the table decays) and appends what it applied
to the bucket's stream, atomically. The 200 comes once Redis has answered all of
them. The worker does not apply its own feedback to the mirror: like every other
replica's, it arrives through the tailer, so the mirror has one writer and one order.

In a Cluster a batch that spans buckets is atomic per bucket, not as a whole; a
batch that gets a 503 may have been applied in part, and a retry is made safe by
its event ids (those that were applied come back as duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import redis.exceptions

from mab.clock import clock
from mab.config import Config, LearningConfig, RedisConfig
from mab.errors import ArmTableFull, StoreUnavailable
from mab.feedback import Applied, parse_feedback
from mab.native import backend
from mab.state.commit import FlushHook
from mab.state.mirror import MirrorState, Tailer
from mab.state.records import Event
from mab.state.table import ArmCounts, ArmTable
from mab.store.base import StoreHealth
from mab.store.redis_client import UNAVAILABLE, AsyncClient, async_client
from mab.store.redis_layout import FEEDBACK_LUA, N_BUCKETS, bucket_keys, bucket_of
from mab.store.redis_load import load_mirror, resolve_mode

if TYPE_CHECKING:
    from mab.predict import Score
    from mab.runner import Runner
    from mab.store.base import Learn

_SHA = hashlib.sha1(FEEDBACK_LUA.encode()).hexdigest()
_TAILER_WORKER = 0  # the worker whose loop runs the replica's one tailer


class FeedbackWriter:
    """One worker's writes of /feedback batches to Redis."""

    def __init__(self, client: AsyncClient, config: RedisConfig, learning: LearningConfig) -> None:
        self._client = client
        self._prefix = config.prefix
        per_bucket = max(learning.dedupe_capacity // N_BUCKETS, 1)
        self._settings = [repr(learning.half_life), repr(learning.dedupe_window), str(per_bucket)]
        self._maxlen = str(config.stream_maxlen)
        # WAITAOF on the pipeline's connection covers the scripts before it.
        self._wait_aof = config.wait_aof
        self._wait_ms = max(int(config.timeout * 1000), 1)

    async def write(self, events: list[Event], at: float) -> Applied:
        groups: dict[int, list[str]] = {}
        for event in events:
            args = groups.setdefault(bucket_of(event.arm), [])
            args += (event.arm, repr(event.successes), repr(event.failures), event.event_id or "")
        head = [repr(at), repr(time.time()), *self._settings, self._maxlen]
        pending = list(groups)
        totals = np.zeros(3, dtype=np.int64)
        for _ in range(2):  # again after loading the script, if Redis had lost it
            pipe = self._client.pipeline(transaction=False)
            for bucket in pending:
                keys = bucket_keys(self._prefix, bucket).script_keys()
                pipe.evalsha(_SHA, len(keys), *keys, *head, *groups[bucket])
            if self._wait_aof is not None:
                pipe.execute_command("WAITAOF", 1, self._wait_aof, self._wait_ms)
            results = await pipe.execute(raise_on_error=False)
            fsynced = results.pop() if self._wait_aof is not None else None
            missing = []
            for bucket, result in zip(pending, results, strict=True):
                if isinstance(result, redis.exceptions.NoScriptError):
                    missing.append(bucket)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    totals += np.asarray(result, dtype=np.int64)
            if not missing:
                if self._wait_aof is not None:
                    self._check_fsynced(fsynced)
                applied, new_arms, duplicates = totals.tolist()
                return Applied(applied, new_arms, duplicates)
            await self._client.script_load(FEEDBACK_LUA)
            pending = missing
        raise redis.exceptions.NoScriptError("the feedback script vanished twice")

    def _check_fsynced(self, result: Any) -> None:
        if isinstance(result, BaseException):
            raise result
        local, replicas = (int(n) for n in result)
        if local < 1 or replicas < (self._wait_aof or 0):
            raise redis.exceptions.TimeoutError(
                f"WAITAOF: fsynced by {local} local and {replicas} replica AOFs in time"
            )


class RedisLearner:
    """/feedback of one worker: validate, check room, write to Redis within the timeout."""

    def __init__(
        self,
        table: ArmTable,
        writer: FeedbackWriter,
        now: Callable[[], float],
        config: RedisConfig,
        max_events: int,
        on_applied: Callable[[Applied], None],
    ) -> None:
        self._table, self._writer, self._now = table, writer, now
        self._timeout, self._max_events = config.timeout, max_events
        self._on_applied = on_applied

    def _check_room(self, events: list[Event]) -> None:
        """507 before writing, when the batch's new arms would not fit this mirror.
        (Arms other replicas add meanwhile can still overfill it: the tailer then
        leaves them out and counts them, mab_mirror_dropped_arms.)"""
        src = orjson.dumps([event.arm for event in events])
        rows, unknown = self._table.native.lookup(src, backend.find_spans(src, len(events)))
        if not unknown:
            return
        absent = self._table.max_arms
        new = {
            e.arm for e, row in zip(events, np.asarray(rows).tolist(), strict=True) if row == absent
        }
        if len(self._table) + len(new) > self._table.max_arms:
            raise ArmTableFull(
                f"the batch adds {len(new)} arms; the table holds {len(self._table)} of "
                f"--max-arms {self._table.max_arms}"
            )

    async def __call__(self, body: bytes) -> Applied:
        events = parse_feedback(body, self._max_events)  # validate
        self._check_room(events)
        try:
            async with asyncio.timeout(self._timeout):
                applied = await self._writer.write(events, self._now())  # in Redis
        except TimeoutError:
            raise StoreUnavailable(
                f"redis did not acknowledge within {self._timeout:g} s; retry with the same "
                "event ids"
            ) from None
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis is unavailable: {exc}") from None
        self._on_applied(applied)
        return applied  # acknowledge


class RedisStore:
    name = "redis"

    def __init__(self, config: Config) -> None:
        self._config = resolve_mode(config.redis)  # Cluster mode, when the URL says so
        self._learning = config.learning
        self._now = clock()
        # Built here, in the parent: the mirror table and the tailer's positions are
        # shared memory, seen by every worker forked later.
        self.state = MirrorState()
        self.table = load_mirror(self._config, self._learning, self.state, self._now())
        self._client: AsyncClient = None
        self._tailer: Tailer | None = None

    async def start(self, worker: int = 0) -> None:
        self._client = async_client(
            self._config, socket_timeout=max(1.0, 10 * self._config.timeout)
        )
        try:  # so the first /feedback finds the script (else it loads it then)
            async with asyncio.timeout(1.0):
                await self._client.script_load(FEEDBACK_LUA)
        except UNAVAILABLE:
            pass  # Redis is away: the first /feedback after its return loads it
        if worker == _TAILER_WORKER:
            self._tailer = Tailer(self.table, self.state, self._config)
            await self._tailer.start()

    async def close(self) -> None:
        if self._tailer is not None:
            await self._tailer.close()
        if self._client is not None:
            await self._client.aclose()

    def scorer(self, runner: Runner) -> Score:
        from mab.predict import TableScore

        return TableScore(self.table, runner, self._now)

    def learner(self, on_applied: Callable[[Applied], None], on_fsync: FlushHook | None) -> Learn:
        writer = FeedbackWriter(self._client, self._config, self._learning)
        return RedisLearner(
            self.table, writer, self._now, self._config, self._learning.max_events, on_applied
        )

    def arm(self, arm_id: str) -> ArmCounts | None:
        return self.table.arm(arm_id, self._now())

    def maintain(self) -> None:
        pass  # Redis keeps the state durable

    def reloaded(self, config: Config) -> None:
        return None  # the counts live in Redis (mab load-catalog); the mirror follows them

    def stopped(self) -> None:
        pass

    def health(self) -> StoreHealth:
        state = self.state
        since = max(time.time() - state.last_contact, 0.0)
        fresh = state.connected() and since <= self._config.stale_after
        detail: dict[str, Any] = {
            "arms": len(self.table),
            "redis": "ok" if fresh else "unreachable",
            "mirror_lag_seconds": round(state.last_lag if fresh else since, 6),
            "mirror_reloads": state.reloads,
        }
        if fresh:
            return StoreHealth(ok=True, detail=detail)
        return StoreHealth(
            ok=True,
            degraded=True,
            status=self._config.degraded_status,
            reason=f"no news from redis for {since:.1f} s: serving from the mirror",
            detail=detail,
        )
