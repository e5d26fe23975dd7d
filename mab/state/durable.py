"""Durable state: the arm table at start-up, the journal, compaction into snapshots.

In `--state-dir`: `snapshot.bin` (the whole table as of the end of a journal
segment) and `journal-N.log` (the batches applied since). At start-up the parent
loads the snapshot, or the catalog when there is none (or when the catalog changed
since: a new batch computation supersedes what was learned, and the old state is
kept aside), replays the journal on top, and compacts at once. Workers append to the
segment the table's header names; the parent moves them to a new one when it
compacts (every --snapshot-every seconds, and on SIGTERM once the workers stopped).

Without `--state-dir`, feedback lives in memory only: `NoLog` stands in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog

from mab.catalog import Catalog
from mab.config import LearningConfig
from mab.errors import ArmTableFull, StartupError
from mab.feedback import apply_batch
from mab.state import journal, snapshot
from mab.state.commit import FlushHook
from mab.state.table import ArmTable

_log = structlog.get_logger("mab.state")


class NoLog:
    """The journal's stand-in without --state-dir: nothing to write, nothing to wait for."""

    def follow(self, segment: int) -> None:
        pass

    def append(self, record: bytes) -> None:
        pass

    async def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class JournalLog:
    """One worker's appends to the journal (after the fork)."""

    def __init__(self, directory: Path, segment: int, on_fsync: FlushHook | None) -> None:
        self._journal = journal.Journal(directory, segment, on_fsync=on_fsync)

    def follow(self, segment: int) -> None:
        """Append to the segment the table names now (the lock is held)."""
        if segment != self._journal.current_segment:
            self._journal.switch(segment)

    def append(self, record: bytes) -> None:
        self._journal.append(record)

    async def commit(self) -> None:
        await self._journal.commit()

    def close(self) -> None:
        self._journal.close()


def worker_log(
    learning: LearningConfig, table: ArmTable, on_fsync: FlushHook | None
) -> NoLog | JournalLog:
    if learning.state_dir is None:
        return NoLog()
    with table.locked():  # the first worker to open a segment writes its header: one of them
        return JournalLog(learning.state_dir, table.segment, on_fsync)


def catalog_fingerprint(catalog: Catalog) -> str:
    """What identifies the batch computation a state was learned on top of."""
    if catalog.source == "demo":
        return f"demo:{len(catalog)}"
    return file_fingerprint(catalog.source)


def file_fingerprint(path: str) -> str:
    """A catalog file as it is now: a new batch computation changes its size or mtime."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def table_of(catalog: Catalog, learning: LearningConfig, now: float) -> ArmTable:
    return ArmTable(
        catalog.ids,
        catalog.counts,
        max_arms=max(learning.max_arms, len(catalog)),
        dedupe_capacity=learning.dedupe_capacity,
        half_life=learning.half_life,
        t0=now,
        updated=now,
    )


class Durable:
    """The parent's side of the state in --state-dir."""

    def __init__(self, directory: Path, table: ArmTable, fingerprint: str) -> None:
        self.directory = directory
        self.table = table
        self._fingerprint = fingerprint
        self._compacted_at = 0.0
        self.compactions = 0

    def compact(self) -> None:
        """Snapshot the table and move the writers to a new segment: the copy and the
        move in one lock hold, so each record is in the snapshot or in the new segment."""
        started = time.perf_counter()
        with self.table.locked():
            covered = self.table.segment
            payload = self.table.export(extra={"catalog": self._fingerprint})
            self.table.segment = covered + 1
        snapshot.write_snapshot(self.directory, covered, payload)
        pruned = snapshot.prune(self.directory, covered)
        self._compacted_at = time.monotonic()
        self.compactions += 1
        _log.info(
            "state compacted",
            arms=len(self.table),
            snapshot_bytes=len(payload),
            covers_segment=covered,
            segments_pruned=pruned,
            seconds=round(time.perf_counter() - started, 3),
        )

    def maybe_compact(self, every: float) -> None:
        if time.monotonic() - self._compacted_at >= every:
            self.compact()


def _set_aside(directory: Path, reason: str) -> Path:
    aside = directory / f"superseded-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    aside.mkdir()
    for entry in directory.iterdir():
        if entry.name == snapshot.NAME or entry.name.startswith("journal-"):
            entry.rename(aside / entry.name)
    journal.fsync_directory(directory)
    _log.warning("learned state set aside", reason=reason, kept_in=str(aside))
    return aside


def _replay(directory: Path, table: ArmTable, after: int, window: float) -> int:
    batches = 0
    for batch in journal.replay(directory, after):
        try:
            apply_batch(table, NoLog(), batch.at, window, batch.events)
        except ArmTableFull:
            raise StartupError(
                f"{directory}: the journal adds more arms than --max-arms {table.max_arms} "
                "holds; start with a larger --max-arms"
            ) from None
        batches += 1
    return batches


def open_state(
    catalog: Catalog, learning: LearningConfig, now: float
) -> tuple[ArmTable, Durable | None]:
    """The table to serve, and its durability (None without --state-dir)."""
    if learning.state_dir is None:
        _log.warning(
            "feedback lives in memory only: it is lost when the server stops "
            "(give --state-dir to keep it)"
        )
        return table_of(catalog, learning, now), None
    directory = journal.ensure_directory(learning.state_dir)
    fingerprint = catalog_fingerprint(catalog)
    found = snapshot.read_snapshot(directory)
    table: ArmTable | None = None
    covered = -1
    if found is not None:
        covered, payload = found
        meta: dict[str, Any] = ArmTable.meta_of(payload)
        if meta.get("catalog") == fingerprint:
            table = ArmTable.restore(
                payload,
                max_arms=learning.max_arms,
                dedupe_capacity=learning.dedupe_capacity,
                half_life=learning.half_life,
                now=now,
            )
        else:
            _set_aside(
                directory,
                f"the catalog changed since the snapshot ({meta.get('catalog')} -> "
                f"{fingerprint}): its counts supersede the learned ones",
            )
            covered = -1
    if table is None:
        table = table_of(catalog, learning, now)
    replayed = _replay(directory, table, covered, learning.dedupe_window)
    # The first compaction covers every segment there is, and writers start a new one.
    table.segment = max([covered, 0, *journal.segments(directory)])
    durable = Durable(directory, table, fingerprint)
    _log.info(
        "state loaded",
        state_dir=str(directory),
        from_snapshot=found is not None and covered >= 0,
        batches_replayed=replayed,
        arms=len(table),
    )
    durable.compact()
    return table, durable
