"""The feedback journal on SQLite instead: kept to rerun `bench/journal.py`, which
measured it against the hand-written journal (`journal.py`, the one in use).

Stdlib sqlite3, WAL mode, synchronous=FULL, one table of the same records
(`records.encode`). `append` only keeps the record; each group-commit round inserts
everything kept since the last round in one transaction (BEGIN IMMEDIATE ... COMMIT,
an fsync of the WAL) in the flush thread. Several processes may write one file:
SQLite's own lock serializes their transactions, and a process that finds it taken
sleeps in SQLite's busy handler. Records of different processes are therefore in the
order of their transactions, not of the caller's lock; a process's own stay in
order. There are no segments: replay and pruning go by the row number.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator

from mab.state import records
from mab.state.commit import FlushHook, GroupCommit
from mab.state.records import FeedbackBatch

_SCHEMA = "CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, record BLOB NOT NULL)"


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    # isolation_level=None: transactions are the explicit BEGIN/COMMIT below.
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    # Two processes opening a new database together: one of them gets "database is
    # locked" from the switch to WAL at once, without SQLite's busy handler.
    for attempt in itertools.count():
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 1000:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


class SqliteJournal:
    """One process's connection to the journal database at `path`: `append`,
    `commit` and `close` as `Journal`'s, on the event loop's thread."""

    def __init__(self, path: str | os.PathLike[str], *, on_fsync: FlushHook | None = None) -> None:
        self._conn = _connect(path)
        self._pending: list[tuple[bytes]] = []
        self._commits = GroupCommit(self._start_round, on_fsync, name="mab-sqlite-commit")

    @property
    def fsyncs(self) -> int:
        """Transactions committed so far."""
        return self._commits.flushes

    @property
    def fsynced_records(self) -> int:
        return self._commits.flushed_records

    def append(self, record: bytes) -> None:
        self._commits.check()
        self._pending.append((record,))
        self._commits.appended()

    async def commit(self) -> None:
        await self._commits.wait()

    def _start_round(self) -> Callable[[], None]:
        rows, self._pending = self._pending, []
        conn = self._conn

        def work() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO batches (record) VALUES (?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return work

    def close(self) -> None:
        self._commits.close()
        self._conn.close()


def replay(path: str | os.PathLike[str], after_seq: int = 0) -> Iterator[FeedbackBatch]:
    """Every batch with a row number over `after_seq`, in row order."""
    conn = _connect(path)
    try:
        rows = conn.execute("SELECT record FROM batches WHERE seq > ? ORDER BY seq", (after_seq,))
        for (record,) in rows:
            yield records.decode(record)[0]
    finally:
        conn.close()


def prune(path: str | os.PathLike[str], through_seq: int) -> None:
    """Delete the rows a snapshot covers."""
    conn = _connect(path)
    try:
        conn.execute("DELETE FROM batches WHERE seq <= ?", (through_seq,))
    finally:
        conn.close()
