"""The feedback journal: an append-only log of checksummed records, in segments.

Files are `DIR/journal-<segment:08d>.log`, each starting with a 16-byte header
(magic, version, its own segment number) followed by records (`records.py`).
Several worker processes append to the current segment, each through its own
O_APPEND descriptor; the caller serializes appends (and `switch`) across processes
with its lock, so a record is one write(2) at the end of the file and records never
interleave. `commit()` makes a process's appends durable, fsyncs shared through
group commit (`commit.py`).

`replay` reads segments back in order. Only the end of the last segment may hold
what a crash tore: records there were never acknowledged, since every acknowledged
record was fsynced and everything written before it is in the file before it. A
damaged record anywhere else is real damage, and replay stops the start-up. (This is
strict on one rare crash: the kernel may write a file's dirty pages out of order, so
power loss could keep an unacknowledged record but not the one before it; replay
then reports damage at that offset rather than guess, and a person decides.)
"""

from __future__ import annotations

import itertools
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from mab.errors import JournalCorrupt, JournalFailed
from mab.state import records
from mab.state.commit import FlushHook, GroupCommit
from mab.state.records import FeedbackBatch

MAGIC = b"mab-jrnl"
VERSION = 1
_HEADER = struct.Struct("<8sHHI")  # magic, version, reserved, segment
HEADER_SIZE = _HEADER.size
_SEGMENT_NAME = re.compile(r"journal-(\d{8})\.log")

_log = structlog.get_logger("mab.journal")


def segment_path(directory: str | os.PathLike[str], segment: int) -> Path:
    return Path(directory) / f"journal-{segment:08d}.log"


def segment_header(segment: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, 0, segment)


def segments(directory: str | os.PathLike[str]) -> list[int]:
    """The segment numbers in `directory`, ascending."""
    found = []
    for entry in os.scandir(directory):
        match = _SEGMENT_NAME.fullmatch(entry.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make the directory's entries (files created, renamed, deleted) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        fsync_directory(path.parent)
    return path


class Journal:
    """One process's handle on the journal in `directory`, appending to `segment`.

    Create it after the fork, in each worker. `append` and `switch` are called with
    the caller's cross-process lock held; `append`, `switch` and `commit` on the
    event loop's thread. `fsync` is what commit rounds call (injectable, for tests);
    `on_fsync(seconds, records)` is called on the loop after each one succeeds.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment: int,
        *,
        fsync: Callable[[int], None] = os.fsync,
        on_fsync: FlushHook | None = None,
    ) -> None:
        self._directory = ensure_directory(directory)
        self._fsync = fsync
        self._retired: list[int] = []  # fds of earlier segments, closed after their fsync
        self._fd = -1
        self._segment = -1
        self._commits = GroupCommit(self._start_round, on_fsync, name="mab-journal-fsync")
        self._open(segment)

    @property
    def current_segment(self) -> int:
        return self._segment

    @property
    def fsyncs(self) -> int:
        """Group-commit fsyncs completed so far (switch's own fsyncs not counted)."""
        return self._commits.flushes

    @property
    def fsynced_records(self) -> int:
        """Records made durable by those fsyncs: records per fsync = this / fsyncs."""
        return self._commits.flushed_records

    def _open(self, segment: int) -> None:
        path = segment_path(self._directory, segment)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                # The first process to open it (under the caller's lock) writes the
                # header; the new file's entry must be durable before any record in it.
                os.write(fd, segment_header(segment))
                os.fsync(fd)
                fsync_directory(self._directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._segment = segment

    def append(self, record: bytes) -> None:
        """Write one whole record (`records.encode`) at the end of the current segment,
        in one write(2). JournalFailed if it cannot be written; the file is then left
        as it was, or else the journal refuses everything after."""
        self._commits.check()
        view = memoryview(record)
        written = 0
        try:
            # A regular file writes less only when it runs out of room or a signal
            # lands; the rest then goes right after it (we hold the lock).
            while written < len(view):
                count = os.write(self._fd, view[written:])
                if count == 0:
                    raise OSError(f"write(2) wrote nothing of {len(view) - written} bytes")
                written += count
        except OSError as exc:
            if written:
                self._cut_back(written, exc)
            raise JournalFailed(f"journal write failed: {exc}") from exc
        self._commits.appended()

    def _cut_back(self, written: int, exc: OSError) -> None:
        # The next record would go after this partial one, where replay would read
        # damage in the middle: cut the file back to where this record started.
        try:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
        except OSError as cleanup:
            self._commits.fail(f"journal write failed ({exc}), and so did undoing it ({cleanup})")

    async def commit(self) -> None:
        """Return once an fsync that started after this process's last completed
        append has completed. Callers of one process share the fsyncs. JournalFailed
        if that fsync, or any earlier one, failed."""
        await self._commits.wait()

    def _start_round(self) -> Callable[[], None]:
        fds, self._retired = [*self._retired, self._fd], []
        retired = fds[:-1]

        def work() -> None:
            try:
                for fd in fds:
                    self._fsync(fd)
            finally:
                for fd in retired:
                    os.close(fd)

        return work

    def switch(self, segment: int) -> None:
        """Append to `segment` from now on (created if this is the first process to
        open it). Call with the caller's lock held.

        It first fsyncs the current segment, on this thread (one fsync per rotation):
        a record of the new segment must not reach the disk before the old segment's
        records, or a crash could tear a record in a segment that is no longer the
        last, which replay would have to call damage.
        """
        self._commits.check()
        if segment == self._segment:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._commits.fail(f"journal fsync failed: {exc}")
            raise JournalFailed(f"journal fsync failed: {exc}") from exc
        old = self._fd
        self._open(segment)
        # Close it after the next round: a round running now may be using it.
        self._retired.append(old)

    def close(self) -> None:
        """Close the files without an fsync (await commit() first for that)."""
        self._commits.close()
        for fd in [*self._retired, self._fd]:
            os.close(fd)
        self._retired = []
        self._fd = -1


def replay(directory: str | os.PathLike[str], after_segment: int) -> Iterator[FeedbackBatch]:
    """Every batch in the segments after `after_segment`, in order.

    A torn end of the last segment (a record cut short, or bytes after the last
    record that hold no record) is dropped and the file truncated to its last good
    record, with a warning; this happens when the iteration reaches it. Damage
    anywhere else, or a missing segment between two others, raises JournalCorrupt.
    """
    numbers = [n for n in segments(directory) if n > after_segment]
    for previous, number in itertools.pairwise(numbers):
        if number != previous + 1:
            missing = segment_path(directory, previous + 1)
            raise JournalCorrupt(str(missing), 0, "segment missing between two others")
    for i, number in enumerate(numbers):
        yield from _replay_segment(segment_path(directory, number), number, i == len(numbers) - 1)


def _replay_segment(path: Path, segment: int, last: bool) -> Iterator[FeedbackBatch]:
    data = path.read_bytes()
    expected = segment_header(segment)
    if data[:HEADER_SIZE] != expected:
        if last and len(data) < HEADER_SIZE and expected.startswith(data):
            _repair(path, segment, 0, len(data), f"segment header cut short at {len(data)} bytes")
            return
        raise JournalCorrupt(str(path), 0, "bad segment header")
    offset = HEADER_SIZE
    while offset < len(data):
        try:
            batch, end = records.decode(data, offset)
        except records.FrameError as exc:
            if not last or _record_after(data, offset + 1):
                raise JournalCorrupt(str(path), offset, str(exc)) from exc
            _repair(path, segment, offset, len(data) - offset, str(exc))
            return
        except ValueError as exc:
            raise JournalCorrupt(str(path), offset, str(exc)) from exc
        yield batch
        offset = end


def _record_after(data: bytes, start: int) -> bool:
    """Whether a whole, checksummed record starts anywhere at or after `start`."""
    pos = data.find(records.RECORD_MARK, start)
    while pos != -1:
        try:
            records.frame_at(data, pos)
            return True
        except records.FrameError:
            pos = data.find(records.RECORD_MARK, pos + 1)
    return False


def _repair(path: Path, segment: int, offset: int, dropped: int, reason: str) -> None:
    """Truncate the torn end away (a torn header is written anew)."""
    _log.warning(
        "journal_torn_tail", file=str(path), offset=offset, dropped_bytes=dropped, reason=reason
    )
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, offset)
        if offset == 0:
            os.write(fd, segment_header(segment))
        os.fsync(fd)
    finally:
        os.close(fd)
