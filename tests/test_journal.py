"""The feedback journal, snapshots and the SQLite alternative, on real files and in
real processes (tests/journal_writer.py), killed with SIGKILL where it matters."""

from __future__ import annotations

import asyncio
import errno
import math
import os
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from mab.errors import HTTPError, JournalCorrupt, JournalFailed, StartupError
from mab.state import records, sqlite_journal
from mab.state.journal import HEADER_SIZE, Journal, replay, segment_path, segments
from mab.state.records import Event, FeedbackBatch
from mab.state.snapshot import prune, read_snapshot, write_snapshot
from tests.journal_writer import batch_for

WRITER = str(Path(__file__).with_name("journal_writer.py"))


def write_batches(directory: Path, batches: list[FeedbackBatch], segment: int = 1) -> None:
    journal = Journal(directory, segment)
    for batch in batches:
        journal.append(records.encode(batch))
    journal.close()


def float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WRITER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---------------------------------------------------------------- records, round trip


def test_round_trip_is_bit_exact_with_unicode_ids(tmp_path: Path) -> None:
    """Batches come back equal, floats bit for bit (NaN, -0.0, subnormals, inf), with
    non-ASCII arm and event ids, and events without an id."""
    odd = [0.1, 1 / 3, -0.0, 5e-324, math.inf, math.nan, 1.7976931348623157e308, 2.0**-1022]
    batches = [
        FeedbackBatch(1_790_000_000.123456, [Event("item_0000001", 1.0, 0.0, None)]),
        FeedbackBatch(
            1_790_000_001.5,
            [
                Event(arm, s, f, eid)
                for arm, s, f, eid in zip(
                    ["ärm-😀", "臂", "", "item\u00e9\u0301"] * 2,
                    odd,
                    reversed(odd),
                    ["事件-1", None, "évènement", "🎯"] * 2,
                    strict=True,
                )
            ],
        ),
        FeedbackBatch(-0.0, []),
    ]
    write_batches(tmp_path, batches)
    back = list(replay(tmp_path, 0))
    assert len(back) == len(batches)
    for got, sent in zip(back, batches, strict=True):
        assert float_bits(got.at) == float_bits(sent.at)
        assert [(e.arm, e.event_id) for e in got.events] == [
            (e.arm, e.event_id) for e in sent.events
        ]
        for g, s in zip(got.events, sent.events, strict=True):
            assert float_bits(g.successes) == float_bits(s.successes)
            assert float_bits(g.failures) == float_bits(s.failures)


def test_an_id_over_the_length_limit_is_refused() -> None:
    """An arm id over 65,534 bytes of UTF-8 cannot be encoded (ValueError), not cut."""
    with pytest.raises(ValueError, match="arm id"):
        records.encode(FeedbackBatch(0.0, [Event("é" * 40_000, 1.0, 0.0)]))
    records.encode(FeedbackBatch(0.0, [Event("x" * records.MAX_ID_BYTES, 1.0, 0.0)]))


# ---------------------------------------------------------------- group commit


class GatedFsync:
    """An fsync that waits for the test to let each call through, then fsyncs."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.go = threading.Semaphore(0)

    def __call__(self, fd: int) -> None:
        self.entered.release()
        assert self.go.acquire(timeout=60)
        os.fsync(fd)

    async def wait_entered(self) -> None:
        """Until a call is inside; a deadline only bounds a failure."""
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.entered.acquire, True, 60)


def test_concurrent_commits_share_one_fsync(tmp_path: Path) -> None:
    """Ten tasks that append then commit together are made durable by one fsync of
    ten records, reported to on_fsync."""
    rounds: list[int] = []

    async def main() -> Journal:
        journal = Journal(tmp_path, 1, on_fsync=lambda seconds, n: rounds.append(n))

        async def one(i: int) -> None:
            journal.append(records.encode(batch_for("g", i)))
            await journal.commit()

        await asyncio.gather(*(one(i) for i in range(10)))
        return journal

    journal = asyncio.run(main())
    journal.close()
    assert rounds == [10]
    assert (journal.fsyncs, journal.fsynced_records) == (1, 10)
    assert len(list(replay(tmp_path, 0))) == 10


def test_an_append_after_an_fsync_started_waits_for_the_next(tmp_path: Path) -> None:
    """A commit whose append completed while an fsync was already running is not
    released by that fsync, only by the next one, which starts right after it."""
    gate = GatedFsync()
    rounds: list[int] = []

    async def main() -> None:
        journal = Journal(tmp_path, 1, fsync=gate, on_fsync=lambda s, n: rounds.append(n))
        journal.append(records.encode(batch_for("a", 0)))
        first = asyncio.create_task(journal.commit())
        await gate.wait_entered()  # round 1 is in fsync
        journal.append(records.encode(batch_for("b", 0)))
        second = asyncio.create_task(journal.commit())
        gate.go.release()
        await first
        await gate.wait_entered()  # round 2 is in fsync
        assert not second.done()
        gate.go.release()
        await second
        journal.close()

    asyncio.run(main())
    assert rounds == [1, 1]


def test_commit_without_new_appends_needs_no_fsync(tmp_path: Path) -> None:
    """A commit when every append is already durable returns without an fsync."""

    async def main() -> int:
        journal = Journal(tmp_path, 1)
        journal.append(records.encode(batch_for("n", 0)))
        await journal.commit()
        await journal.commit()
        journal.close()
        return journal.fsyncs

    assert asyncio.run(main()) == 1


def test_a_failed_fsync_fails_its_waiters_and_everything_after(tmp_path: Path) -> None:
    """An fsync that raises fails every waiter of its round with JournalFailed (503
    journal_failed, Retry-After 1), and later appends and commits fail too, even
    once fsync works again."""
    calls = 0

    def flaky_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    async def main() -> list[BaseException | None]:
        journal = Journal(tmp_path, 1, fsync=flaky_fsync)

        async def one(i: int) -> None:
            journal.append(records.encode(batch_for("f", i)))
            await journal.commit()

        results = await asyncio.gather(*(one(i) for i in range(3)), return_exceptions=True)
        with pytest.raises(JournalFailed):
            journal.append(records.encode(batch_for("f", 9)))
        with pytest.raises(JournalFailed):
            await journal.commit()
        journal.close()
        return list(results)

    results = asyncio.run(main())
    assert all(isinstance(r, JournalFailed) for r in results), results
    assert calls == 1
    error = results[0]
    assert isinstance(error, HTTPError)
    assert (error.status, error.code, error.retry_after) == (503, "journal_failed", 1)


def test_a_write_cut_short_by_the_file_size_limit_leaves_whole_records(tmp_path: Path) -> None:
    """When write(2) stops partway (RLIMIT_FSIZE, as a full disk would), append fails
    with JournalFailed and cuts the partial record off: the file replays without a
    torn tail."""
    limit = 10_000
    proc = writer("fill", str(tmp_path), str(limit))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("appended "), out
    appended = int(out.split()[1].rstrip(":"))
    path = segment_path(tmp_path, 1)
    with structlog.testing.capture_logs() as logs:
        back = list(replay(tmp_path, 0))
    assert back == [batch_for("f", n, events=5) for n in range(appended)]
    assert logs == []
    assert path.stat().st_size <= limit
    record = len(records.encode(batch_for("f", 0, events=5)))
    assert limit - path.stat().st_size < record + 2  # it stopped at the limit


# ---------------------------------------------------------------- segments


def test_switch_moves_to_a_new_segment_and_replay_reads_them_in_order(tmp_path: Path) -> None:
    """Records written across three segments replay in order; after_segment skips
    the segments a snapshot covers."""

    async def main() -> None:
        journal = Journal(tmp_path, 1)
        for n in range(9):
            if n and n % 3 == 0:
                journal.switch(journal.current_segment + 1)
            journal.append(records.encode(batch_for("s", n)))
            await journal.commit()
        journal.close()

    asyncio.run(main())
    assert segments(tmp_path) == [1, 2, 3]
    assert list(replay(tmp_path, 0)) == [batch_for("s", n) for n in range(9)]
    assert list(replay(tmp_path, 2)) == [batch_for("s", n) for n in range(6, 9)]


def test_a_missing_segment_between_two_others_is_an_error(tmp_path: Path) -> None:
    """A gap in segment numbers means lost records: JournalCorrupt naming the missing file."""
    for segment in (1, 2, 3):
        write_batches(tmp_path, [batch_for("m", segment)], segment)
    segment_path(tmp_path, 2).unlink()
    with pytest.raises(JournalCorrupt, match=r"journal-00000002\.log"):
        list(replay(tmp_path, 0))


# ---------------------------------------------------------------- torn tails, damage


def test_a_torn_last_record_is_dropped_and_truncated_at_every_offset(tmp_path: Path) -> None:
    """The last record cut at each byte inside it: replay yields the earlier records,
    logs a warning with the file, offset and reason, and truncates the file there."""
    batches = [batch_for("t", n, events=2) for n in range(4)]
    write_batches(tmp_path, batches)
    path = segment_path(tmp_path, 1)
    whole = path.read_bytes()
    last_start = len(whole) - len(records.encode(batches[-1]))
    for cut in range(last_start + 1, len(whole)):
        path.write_bytes(whole[:cut])
        with structlog.testing.capture_logs() as logs:
            assert list(replay(tmp_path, 0)) == batches[:-1], cut
        assert path.read_bytes() == whole[:last_start], cut
        assert [(e["event"], e["file"], e["offset"]) for e in logs] == [
            ("journal_torn_tail", str(path), last_start)
        ]
        assert logs[0]["log_level"] == "warning" and logs[0]["reason"]


@pytest.mark.parametrize(
    "garbage",
    [b"\0" * 4096, b"\xff", os.urandom(777), records.RECORD_MARK, records.RECORD_MARK + b"\x10"],
    ids=["zeros", "one-byte", "random", "mark", "mark-and-length"],
)
def test_garbage_after_the_last_record_is_dropped(tmp_path: Path, garbage: bytes) -> None:
    """Bytes after the last record that hold no record (zeros a crash left, random
    bytes, a lone record mark) are dropped; every record before them replays."""
    batches = [batch_for("z", n) for n in range(3)]
    write_batches(tmp_path, batches)
    path = segment_path(tmp_path, 1)
    whole = path.read_bytes()
    path.write_bytes(whole + garbage)
    with structlog.testing.capture_logs() as logs:
        assert list(replay(tmp_path, 0)) == batches
    assert path.read_bytes() == whole
    assert [(e["event"], e["offset"]) for e in logs] == [("journal_torn_tail", len(whole))]


def test_a_torn_segment_header_is_written_anew(tmp_path: Path) -> None:
    """A last segment cut inside its header (a crash right after creating it) holds
    no records; replay rewrites the header so the segment can be appended to."""
    write_batches(tmp_path, [batch_for("h", 0)], 1)
    write_batches(tmp_path, [], 2)
    path = segment_path(tmp_path, 2)
    header = path.read_bytes()
    for cut in range(HEADER_SIZE):
        path.write_bytes(header[:cut])
        with structlog.testing.capture_logs():
            assert list(replay(tmp_path, 0)) == [batch_for("h", 0)]
        assert path.read_bytes() == header


def test_damage_in_the_middle_is_a_startup_error(tmp_path: Path) -> None:
    """A flipped byte in a record that has good records after it is damage, not a
    torn write: JournalCorrupt (a StartupError) naming the file and the offset, and
    the file is left alone."""
    batches = [batch_for("d", n) for n in range(5)]
    write_batches(tmp_path, batches)
    path = segment_path(tmp_path, 1)
    whole = path.read_bytes()
    second = HEADER_SIZE + len(records.encode(batches[0]))
    damaged = bytearray(whole)
    damaged[second + 30] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(JournalCorrupt) as caught:
        list(replay(tmp_path, 0))
    assert isinstance(caught.value, StartupError)
    assert (caught.value.path, caught.value.offset) == (str(path), second)
    assert str(path) in str(caught.value) and f"offset {second}" in str(caught.value)
    assert path.read_bytes() == bytes(damaged)


def test_a_torn_record_in_an_earlier_segment_is_an_error(tmp_path: Path) -> None:
    """Only the last segment may end torn (switch fsyncs a segment before leaving it):
    a cut record at the end of an earlier one is JournalCorrupt."""
    write_batches(tmp_path, [batch_for("e", 0), batch_for("e", 1)], 1)
    write_batches(tmp_path, [batch_for("e", 2)], 2)
    path = segment_path(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(JournalCorrupt, match=r"journal-00000001\.log"):
        list(replay(tmp_path, 0))


def test_a_bad_segment_header_is_an_error(tmp_path: Path) -> None:
    """A segment whose header is not ours, or names another segment, is JournalCorrupt."""
    write_batches(tmp_path, [batch_for("x", 0)], 1)
    path = segment_path(tmp_path, 1)
    path.rename(segment_path(tmp_path, 2))  # its header still says segment 1
    with pytest.raises(JournalCorrupt, match="bad segment header"):
        list(replay(tmp_path, 0))


# ---------------------------------------------------------------- real processes


def read_acks(proc: subprocess.Popen[str], until: int) -> list[int]:
    assert proc.stdout is not None
    acks = []
    for line in proc.stdout:
        acks.append(int(line.split()[1]))
        if len(acks) >= until:
            break
    return acks


@pytest.mark.parametrize("kill_after", [1, 97, 400])
def test_every_acked_batch_survives_sigkill(tmp_path: Path, kill_after: int) -> None:
    """A process with 8 concurrent writers (a new segment every 64 batches) is
    SIGKILLed after `kill_after` acks: replay holds every acked batch, bit for bit,
    in append order, none twice."""
    directory = tmp_path / "journal"
    proc = writer("kill", str(directory), str(tmp_path / "lock"))
    acks = read_acks(proc, kill_after)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    acks += [int(line.split()[1]) for line in out.splitlines(keepends=True) if line.endswith("\n")]
    assert len(acks) >= kill_after
    with structlog.testing.capture_logs():  # a write the kill cut short is a torn tail
        back = list(replay(directory, 0))
    numbers = [round(batch.at - 0.1) for batch in back]
    # The page cache outlives the process: what was written is all there, in order.
    assert numbers == list(range(len(back)))
    assert set(acks) <= set(numbers)
    assert back == [batch_for("k", n, events=50) for n in numbers]


def start_together(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until each process says "ready", then tell them all "go"."""
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def wait_done(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, out) == (0, "done\n"), err


def test_two_processes_append_to_the_same_segments_under_a_lock(tmp_path: Path) -> None:
    """Two processes append 300 batches each to the same segments (one of them moves
    both to a new segment every 40 of its batches), serialized by flock: every
    record replays intact, each process's in its order."""
    directory, lock = str(tmp_path / "journal"), str(tmp_path / "lock")
    procs = [
        writer("pair", directory, lock, "A", "300", "--rotate-every", "40"),
        writer("pair", directory, lock, "B", "300"),
    ]
    start_together(procs)
    wait_done(procs)
    back = list(replay(directory, 0))
    for name in ("A", "B"):
        mine = [b for b in back if (b.events[0].event_id or "").startswith(f"{name}-")]
        assert mine == [batch_for(name, n, events=3) for n in range(300)]
    assert len(back) == 600
    assert segments(directory) == list(range(1, 9))


# ---------------------------------------------------------------- snapshots


def test_snapshot_round_trip_and_replace(tmp_path: Path) -> None:
    """A snapshot reads back as written; a second one replaces it, leaving no temp files."""
    assert read_snapshot(tmp_path) is None
    write_snapshot(tmp_path, 3, b"first")
    assert read_snapshot(tmp_path) == (3, b"first")
    payload = os.urandom(1_000_000)
    write_snapshot(tmp_path, 7, payload)
    assert read_snapshot(tmp_path) == (7, payload)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.bin"]


def test_a_snapshot_write_cut_short_leaves_the_previous_one(tmp_path: Path) -> None:
    """A process whose new snapshot cannot be written whole (RLIMIT_FSIZE stops the
    write partway, as a full disk would) keeps the previous snapshot intact, and no
    temporary file."""
    proc = writer("snapshot", str(tmp_path), "1000000")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("failed: ") and "File too large" in out, out
    assert read_snapshot(tmp_path) == (1, b"old state")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.bin"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],
        lambda data: data + b"x",
        lambda data: data[:10],
        lambda data: b"X" + data[1:],
        lambda data: data[:100] + bytes([data[100] ^ 0x40]) + data[101:],
    ],
    ids=["short", "long", "header-cut", "magic", "flipped-bit"],
)
def test_a_damaged_snapshot_is_a_startup_error(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A snapshot whose header, length or checksum does not hold is JournalCorrupt."""
    write_snapshot(tmp_path, 2, os.urandom(4096))
    path = tmp_path / "snapshot.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(JournalCorrupt, match=r"snapshot\.bin"):
        read_snapshot(tmp_path)


def test_prune_deletes_only_segments_a_snapshot_covers(tmp_path: Path) -> None:
    """prune removes the segments up to the snapshot's, refuses to go past it (or
    without a snapshot), and replay after the snapshot still reads the rest."""
    for segment in range(1, 6):
        write_batches(tmp_path, [batch_for("p", segment)], segment)
    with pytest.raises(ValueError, match="no snapshot"):
        prune(tmp_path, 2)
    write_snapshot(tmp_path, 3, b"state")
    with pytest.raises(ValueError, match="covers 3"):
        prune(tmp_path, 4)
    assert prune(tmp_path, 3) == 3
    assert segments(tmp_path) == [4, 5]
    assert list(replay(tmp_path, 3)) == [batch_for("p", 4), batch_for("p", 5)]


# ---------------------------------------------------------------- SQLite alternative


def test_sqlite_journal_round_trip_and_group_commit(tmp_path: Path) -> None:
    """The SQLite journal replays what ten concurrent committers appended, bit for
    bit, committed in one transaction."""
    path = tmp_path / "journal.db"
    sent = [batch_for("q", n, events=4) for n in range(10)]

    async def main() -> sqlite_journal.SqliteJournal:
        journal = sqlite_journal.SqliteJournal(path)

        async def one(batch: FeedbackBatch) -> None:
            journal.append(records.encode(batch))
            await journal.commit()

        await asyncio.gather(*(one(b) for b in sent))
        return journal

    journal = asyncio.run(main())
    journal.close()
    assert (journal.fsyncs, journal.fsynced_records) == (1, 10)
    assert list(sqlite_journal.replay(path)) == sent
    assert list(sqlite_journal.replay(path, after_seq=8)) == sent[8:]


def test_sqlite_journal_two_processes_open_and_append_together(tmp_path: Path) -> None:
    """Two processes open one new SQLite journal at the same moment and append 200
    batches each: both open, and every batch replays, each process's in order."""
    path = str(tmp_path / "journal.db")
    procs = [writer("sqlite-pair", path, name, "200") for name in ("A", "B")]
    start_together(procs)
    wait_done(procs)
    back = list(sqlite_journal.replay(path))
    for name in ("A", "B"):
        mine = [b for b in back if (b.events[0].event_id or "").startswith(f"{name}-")]
        assert mine == [batch_for(name, n, events=3) for n in range(200)]
    assert len(back) == 400
