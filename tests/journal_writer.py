"""Journal writers that tests/test_journal.py runs as real processes (and kills).

    python tests/journal_writer.py kill DIR LOCK      append forever, "ack N" after each commit
    python tests/journal_writer.py pair DIR LOCK NAME COUNT [--rotate-every K]
    python tests/journal_writer.py sqlite-pair DB NAME COUNT
    python tests/journal_writer.py fill DIR LIMIT     append until the file size limit
    python tests/journal_writer.py snapshot DIR LIMIT replace a snapshot, over the limit

The caller's cross-process lock is an fcntl.flock on LOCK; the caller's shared memory
that says which segment is current is the file LOCK.segment, read and written under
that lock.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import resource
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mab.errors import JournalFailed
from mab.state import records
from mab.state.journal import Journal
from mab.state.records import Event, FeedbackBatch
from mab.state.snapshot import write_snapshot
from mab.state.sqlite_journal import SqliteJournal


def batch_for(name: str, number: int, events: int = 1) -> FeedbackBatch:
    """The batch a writer sends as its `number`th: its content is known from the
    number, so a test can check each one replayed bit for bit."""
    return FeedbackBatch(
        at=number + 0.1,
        events=[
            Event(f"{name}-arm-{number}-{i}", number / 3, (i + 1) / 7, f"{name}-{number}-{i}")
            for i in range(events)
        ],
    )


@contextmanager
def locked(lock_fd: int) -> Iterator[None]:
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)


def current_segment(lock_path: str) -> int:
    try:
        return int(Path(lock_path + ".segment").read_text())
    except FileNotFoundError:
        return 1


async def kill_mode(directory: str, lock_path: str) -> None:
    """8 concurrent writers in one process, a new segment every 64 batches: the test
    SIGKILLs this process; every batch acked before must replay."""
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    journal = Journal(directory, 1)
    numbers = iter(range(sys.maxsize))

    async def writer() -> None:
        while True:
            number = next(numbers)
            record = records.encode(batch_for("k", number, events=50))
            with locked(lock_fd):
                if number and number % 64 == 0:
                    journal.switch(journal.current_segment + 1)
                journal.append(record)
            await journal.commit()
            print(f"ack {number}", flush=True)

    await asyncio.gather(*(writer() for _ in range(8)))


async def pair_mode(directory: str, lock_path: str, name: str, count: int, rotate: int) -> None:
    """One of two processes appending to the same segments under the lock; with
    rotate > 0 this one moves everyone to a new segment every `rotate` batches."""
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    with locked(lock_fd):
        journal = Journal(directory, current_segment(lock_path))
    print("ready", flush=True)
    sys.stdin.readline()  # "go": both processes start appending together
    for number in range(count):
        record = records.encode(batch_for(name, number, events=3))
        with locked(lock_fd):
            segment = current_segment(lock_path)
            if rotate and number and number % rotate == 0:
                segment += 1
                Path(lock_path + ".segment").write_text(str(segment))
            if segment != journal.current_segment:
                journal.switch(segment)
            journal.append(record)
        await journal.commit()
    journal.close()
    print("done", flush=True)


async def sqlite_pair_mode(path: str, name: str, count: int) -> None:
    """One of two processes that open the same new SQLite journal at the same moment
    and append `count` batches to it."""
    print("ready", flush=True)
    sys.stdin.readline()
    journal = SqliteJournal(path)
    for number in range(count):
        journal.append(records.encode(batch_for(name, number, events=3)))
        await journal.commit()
    journal.close()
    print("done", flush=True)


async def fill_mode(directory: str, limit: int) -> None:
    """Append until RLIMIT_FSIZE makes write(2) stop partway; print how many were
    appended and committed."""
    journal = Journal(directory, 1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    appended = 0
    try:
        while True:
            journal.append(records.encode(batch_for("f", appended, events=5)))
            appended += 1
            await journal.commit()
    except JournalFailed as exc:
        print(f"appended {appended}: {exc}", flush=True)
    await journal.commit()
    journal.close()


def snapshot_mode(directory: str, limit: int) -> None:
    """Write a small snapshot, then try to replace it with one over RLIMIT_FSIZE, so
    the write stops partway as on a full disk; print what that raised."""
    write_snapshot(directory, 1, b"old state")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        write_snapshot(directory, 2, b"n" * (3 * limit))
    except OSError as exc:
        print(f"failed: {exc}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    kill = sub.add_parser("kill")
    kill.add_argument("directory")
    kill.add_argument("lock")
    pair = sub.add_parser("pair")
    pair.add_argument("directory")
    pair.add_argument("lock")
    pair.add_argument("name")
    pair.add_argument("count", type=int)
    pair.add_argument("--rotate-every", type=int, default=0)
    sqlite_pair = sub.add_parser("sqlite-pair")
    sqlite_pair.add_argument("path")
    sqlite_pair.add_argument("name")
    sqlite_pair.add_argument("count", type=int)
    fill = sub.add_parser("fill")
    fill.add_argument("directory")
    fill.add_argument("limit", type=int)
    snap = sub.add_parser("snapshot")
    snap.add_argument("directory")
    snap.add_argument("limit", type=int)
    args = ap.parse_args()
    if args.mode == "kill":
        asyncio.run(kill_mode(args.directory, args.lock))
    elif args.mode == "pair":
        asyncio.run(pair_mode(args.directory, args.lock, args.name, args.count, args.rotate_every))
    elif args.mode == "sqlite-pair":
        asyncio.run(sqlite_pair_mode(args.path, args.name, args.count))
    elif args.mode == "fill":
        asyncio.run(fill_mode(args.directory, args.limit))
    else:
        snapshot_mode(args.directory, args.limit)


if __name__ == "__main__":
    main()
