"""The live arm table: one copy of every arm's counts, in shared memory made before
the fork, read by every worker's /predict and written under one lock.

The region is laid out here (the native code reads the layout from its header,
`mab_table_header` in table.h): the counts of rows [0, max_arms] side by side (row
max_arms is the absent row, always 0 / 0), when each row last changed, the ids of the
arms added after start-up (and their index), and the event ids applied lately (a
ring, for deduplication). Rows [0, n_base) are the start-up arms, found through a
private index built with the table; added arms through the region's own index.

With decay (half-life h), a row holds its counts times 2^((t - t0) / h) for evidence
of time t: reading multiplies by one factor per request, nothing sweeps the table.
"""

from __future__ import annotations

import mmap
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import structlog

from mab.errors import StartupError
from mab.native import backend
from mab.native.api import FloatArray, Spans
from mab.native.scoring import literal_key

MAGIC = 0x6D61622D74626C31  # "mab-tbl1", MAB_TABLE_MAGIC
VERSION = 1
LOCK_AT, HEADER_BYTES = 512, 4096  # the lock's place (MAB_TABLE_LOCK_AT), the header's room
SLOT_BYTES = 32
ID_BYTES_PER_ADDED_ARM = 64  # room in the id space for each arm added later, on average

# The header's 8-byte fields, in mab_table_header's order.
_FIELDS = (
    "magic version max_arms n_base n_arms over_slots over_seed blob_cap blob_used "
    "dedupe_cap dedupe_slots ring_head ring_count epoch t0 half_life off_counts "
    "off_updated off_new_ids off_over off_blob off_ring off_dedupe region_bytes "
    "generation segment"
).split()
_AT = {name: i for i, name in enumerate(_FIELDS)}
_DOUBLES = {"t0", "half_life"}

_log = structlog.get_logger("mab.table")


def _power_of_two(n: int) -> int:
    size = 16
    while size < n:
        size *= 2
    return size


def _aligned(offset: int) -> int:
    return (offset + 63) // 64 * 64


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """One arm as GET /arms shows it, decayed to the time it was read."""

    successes: float
    failures: float
    updated_at: float  # unix seconds of the last change (or of the load)


class ArmTable:
    """The table, built in the parent before the workers fork."""

    def __init__(
        self,
        ids: list[str],
        counts: FloatArray,
        *,
        max_arms: int,
        dedupe_capacity: int,
        half_life: float,
        t0: float,
        updated: FloatArray | float,
    ) -> None:
        n = len(ids)
        if max_arms < n:
            raise StartupError(f"--max-arms {max_arms} is below the {n} arms at start-up")
        added = max_arms - n
        fields: dict[str, Any] = {
            "magic": MAGIC,
            "version": VERSION,
            "max_arms": max_arms,
            "n_base": n,
            "n_arms": n,
            "over_slots": _power_of_two(2 * added),
            "over_seed": secrets.randbits(64),
            "blob_cap": added * ID_BYTES_PER_ADDED_ARM,
            "dedupe_cap": max(dedupe_capacity, 1),
            "dedupe_slots": _power_of_two(2 * max(dedupe_capacity, 1)),
            "t0": t0,
            "half_life": half_life,
        }
        offset = HEADER_BYTES
        for name, size in (
            ("off_counts", 16 * (max_arms + 1)),
            ("off_updated", 8 * max_arms),
            ("off_new_ids", 16 * added),
            ("off_over", SLOT_BYTES * fields["over_slots"]),
            ("off_blob", fields["blob_cap"]),
            ("off_ring", 24 * fields["dedupe_cap"]),
            ("off_dedupe", 4 * fields["dedupe_slots"]),
        ):
            fields[name] = offset
            offset = _aligned(offset + size)
        fields["region_bytes"] = offset
        # Anonymous and MAP_SHARED: zero pages, shared with the workers forked later;
        # only the pages written cost memory.
        self.region = mmap.mmap(-1, offset)
        self._u64 = np.frombuffer(self.region, dtype=np.uint64, count=len(_FIELDS))
        self._f64 = np.frombuffer(self.region, dtype=np.float64, count=len(_FIELDS))
        for name, value in fields.items():
            self._set(name, value)
        self.counts = self._view("off_counts", np.float64, (max_arms + 1, 2))
        self.updated = self._view("off_updated", np.float64, (max_arms,))
        self.new_ids = self._view("off_new_ids", np.uint64, (added, 2))
        self.blob = self._view("off_blob", np.uint8, (fields["blob_cap"],))
        self.ring = self._view("off_ring", np.uint64, (fields["dedupe_cap"], 3))
        self.dedupe = self._view("off_dedupe", np.uint32, (fields["dedupe_slots"],))
        self.counts[:n] = counts[:n]
        self.updated[:n] = updated
        backend.table_init_lock(self.region)
        self.base_ids = ids
        self.index = backend.Index([literal_key(arm) for arm in ids])
        self.native = backend.LiveTable(self.region, self.index)
        self.max_arms = max_arms

    # ---------------------------------------------------------------- header

    def _get(self, name: str) -> Any:
        at = _AT[name]
        value: Any = float(self._f64[at]) if name in _DOUBLES else int(self._u64[at])
        return value

    def _set(self, name: str, value: Any) -> None:
        if name in _DOUBLES:
            self._f64[_AT[name]] = value
        else:
            self._u64[_AT[name]] = value

    def _view(self, name: str, dtype: Any, shape: tuple[int, ...]) -> Any:
        count = int(np.prod(shape))
        return np.frombuffer(self.region, dtype=dtype, count=count, offset=self._get(name)).reshape(
            shape
        )

    def __len__(self) -> int:
        """Arms in the table now (start-up ones and added ones)."""
        return int(self._get("n_arms"))

    @property
    def half_life(self) -> float:
        return float(self._get("half_life"))

    @property
    def segment(self) -> int:
        """The journal segment writers append to now (moved by compaction)."""
        return int(self._get("segment"))

    @segment.setter
    def segment(self, value: int) -> None:
        self._set("segment", value)

    # ---------------------------------------------------------------- access

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The writers' lock, across every process of the server."""
        if self.native.lock():
            _log.warning("arm table lock recovered: its last holder died holding it")
        try:
            yield
        finally:
            self.native.unlock()

    def ids(self) -> list[str]:
        """Every arm id, in row order."""
        added = len(self) - len(self.base_ids)
        blob = self.blob.tobytes()
        texts = [
            blob[int(at) : int(at) + int(length)] for at, length in self.new_ids[:added].tolist()
        ]
        return [*self.base_ids, *(orjson.loads(b'"' + text + b'"') for text in texts)]

    def arm(self, arm_id: str, now: float) -> ArmCounts | None:
        """One arm's counts, decayed to `now`, or None when it is not in the table."""
        src = orjson.dumps([arm_id])
        rows, unknown = self.native.lookup(src, backend.find_spans(src, 1))
        if unknown:
            return None
        return ArmCounts(*self.native.read(now, int(rows[0])))

    def apply(
        self,
        now: float,
        window: float,
        src: bytes,
        spans: Spans,
        ds: FloatArray,
        df: FloatArray,
        event_src: bytes,
        event_spans: Spans,
    ) -> tuple[Any, tuple[int, int, int]]:
        """See mab_table_apply; the caller holds the lock."""
        return self.native.apply(now, window, src, spans, ds, df, event_src, event_spans)

    def set(
        self, src: bytes, spans: Spans, successes: FloatArray, failures: FloatArray, t: FloatArray
    ) -> None:
        """See mab_table_set (counts kept elsewhere, as of times t); the caller holds the
        lock. ArmTableFull, and nothing changes, when its new arms do not fit."""
        self.native.set(src, spans, successes, failures, t)

    # ---------------------------------------------------------------- snapshots

    def export(self, extra: dict[str, Any] | None = None) -> bytes:
        """The whole state as bytes, for a snapshot (call with the lock held); `extra`
        goes into its metadata (`meta_of`)."""
        n = len(self)
        ring_count, head, cap = self._get("ring_count"), self._get("ring_head"), len(self.ring)
        order = (np.arange(head - ring_count, head) % cap) if ring_count else np.arange(0)
        meta = {
            "version": VERSION,
            "arms": n,
            "t0": self._get("t0"),
            "half_life": self.half_life,
            "events": ring_count,
            **(extra or {}),
        }
        head_bytes = orjson.dumps(meta)
        ids = orjson.dumps(self.ids())
        parts = [
            struct.pack("<II", len(head_bytes), len(ids)),
            head_bytes,
            ids,
            self.counts[:n].tobytes(),
            self.updated[:n].tobytes(),
            self.ring[order].tobytes(),
        ]
        return b"".join(parts)

    @staticmethod
    def meta_of(payload: bytes) -> dict[str, Any]:
        """The metadata of `export`'s bytes."""
        meta_len, _ = struct.unpack_from("<II", payload)
        meta: dict[str, Any] = orjson.loads(payload[8 : 8 + meta_len])
        return meta

    @classmethod
    def restore(
        cls,
        payload: bytes,
        *,
        max_arms: int,
        dedupe_capacity: int,
        half_life: float,
        now: float,
    ) -> ArmTable:
        """A table from `export`'s bytes. Under another half-life than it was saved
        with, the counts are first decayed to `now` the old way, then kept from there."""
        meta_len, ids_len = struct.unpack_from("<II", payload)
        at = 8
        meta = orjson.loads(payload[at : at + meta_len])
        at += meta_len
        ids = orjson.loads(payload[at : at + ids_len])
        at += ids_len
        n = meta["arms"]
        counts = np.frombuffer(payload, np.float64, 2 * n, at).reshape(n, 2).copy()
        at += 16 * n
        updated = np.frombuffer(payload, np.float64, n, at).copy()
        at += 8 * n
        ring = np.frombuffer(payload, np.uint64, 3 * meta["events"], at).reshape(-1, 3)
        t0 = meta["t0"]
        if half_life != meta["half_life"]:
            if meta["half_life"] > 0:
                counts *= 2.0 ** (-(now - t0) / meta["half_life"])
            t0 = now
        table = cls(
            ids,
            counts,
            max_arms=max(max_arms, n),
            dedupe_capacity=dedupe_capacity,
            half_life=half_life,
            t0=t0,
            updated=updated,
        )
        table._restore_events(ring)
        return table

    def _restore_events(self, entries: Any) -> None:
        """The remembered event ids, oldest first (the newest, if they do not all fit)."""
        cap = len(self.ring)
        entries = entries[-cap:]
        count = len(entries)
        self.ring[:count] = entries
        mask = len(self.dedupe) - 1
        for pos, lo in enumerate(entries[:, 1].tolist()):
            slot = lo & mask
            while self.dedupe[slot]:
                slot = (slot + 1) & mask
            self.dedupe[slot] = pos + 1
        self._set("ring_count", count)
        self._set("ring_head", count % cap)
