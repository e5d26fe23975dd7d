#!/usr/bin/env python3
"""The feedback journal (mab/state/journal.py) against SQLite (sqlite_journal.py).

    python bench/journal.py                       # everything, 3 runs of each, medians
    python bench/journal.py --only fsync throughput --seconds 3
    python bench/journal.py --dirs /dev/shm       # on tmpfs: the CPU cost without a disk

Each figure is the median of --repeat runs; the two journals alternate run by run.

- fsync: one 100-byte write, then its fsync (journal) or a one-row INSERT + COMMIT
  (SQLite, WAL, synchronous=FULL): p50/p99 over --small-writes; and switch() to a
  new segment.
- throughput: 2 processes x {1, 8, 64} asyncio writers (uvloop), each looping: encode
  a batch of 100 events, append it under an fcntl.flock (the stand-in for the
  server's lock), await commit(). Events/s committed; commit latency (append done to
  commit returned) p50/p99; records per fsync; the wait before the covering fsync
  started (latency - that fsync's duration).
- replay: 1M events (10,000 batches of 100) read back, page cache warm and evicted
  (posix_fadvise DONTNEED after an fsync).
- snapshot: write_snapshot and read_snapshot of a 40 MB payload (1M arms x 40 bytes).

Directories: by default a temporary one under this checkout, and /tmp too if it is
on another filesystem. bench/RESULTS.md, section 7, has a run.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import uvloop

from mab.state import records, sqlite_journal
from mab.state.journal import Journal, replay, segment_path
from mab.state.records import Event, FeedbackBatch
from mab.state.snapshot import read_snapshot, write_snapshot

HERE = Path(__file__).resolve().parent
KINDS = ("journal", "sqlite")
EVENTS_PER_BATCH = 100


class Durable(Protocol):
    def append(self, record: bytes) -> None: ...
    async def commit(self) -> None: ...
    def close(self) -> None: ...


def progress(text: str) -> None:
    print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_batches(count: int, seed: int) -> list[FeedbackBatch]:
    """Batches of 100 events, arm ids like item_0001234, random event ids."""
    rng = random.Random(seed)
    return [
        FeedbackBatch(
            time.time(),
            [
                Event(f"item_{rng.randrange(1_000_000):07d}", 1.0, 0.0, uuid.uuid4().hex)
                for _ in range(EVENTS_PER_BATCH)
            ],
        )
        for _ in range(count)
    ]


def open_journal(kind: str, directory: Path, on_fsync: Callable[[float, int], None]) -> Durable:
    if kind == "journal":
        return Journal(directory, 1, on_fsync=on_fsync)
    return sqlite_journal.SqliteJournal(directory / "journal.db", on_fsync=on_fsync)


def evict(paths: Iterable[Path]) -> None:
    """Drop these files' pages from the page cache (they must be clean: fsynced)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- fsync of one small write


def small_write_seconds(kind: str, directory: Path, count: int) -> list[float]:
    record = os.urandom(100)
    seconds = []
    if kind == "journal":
        fd = os.open(directory / "small.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for _ in range(count):
            os.write(fd, record)
            started = time.perf_counter()
            os.fsync(fd)
            seconds.append(time.perf_counter() - started)
        os.close(fd)
    else:
        conn = sqlite3.connect(directory / "small.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, record BLOB)")
        for _ in range(count):
            started = time.perf_counter()
            conn.execute("INSERT INTO t (record) VALUES (?)", (record,))
            seconds.append(time.perf_counter() - started)
        conn.close()
    return seconds


def switch_seconds(directory: Path, count: int) -> list[float]:
    """switch(): fsync the old segment, create the next, write and fsync its header,
    fsync the directory; with one small record appended in between."""
    journal = Journal(directory, 1)
    seconds = []
    for segment in range(2, count + 2):
        journal.append(records.encode(FeedbackBatch(0.0, [Event("item_0000001", 1.0, 0.0)])))
        started = time.perf_counter()
        journal.switch(segment)
        seconds.append(time.perf_counter() - started)
    journal.close()
    return seconds


def bench_fsync(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[tuple[float, float]]] = {"journal": [], "sqlite": [], "switch": []}
    for repeat in range(args.repeat):
        for kind in KINDS:
            progress(f"[fsync {directory}] {kind} run {repeat + 1}/{args.repeat}")
            work = Path(tempfile.mkdtemp(dir=directory))
            seconds = small_write_seconds(kind, work, args.small_writes)
            runs[kind].append((pct(seconds, 0.5), pct(seconds, 0.99)))
            shutil.rmtree(work)
        work = Path(tempfile.mkdtemp(dir=directory))
        seconds = switch_seconds(work, 50)
        runs["switch"].append((pct(seconds, 0.5), pct(seconds, 0.99)))
        shutil.rmtree(work)
    return {
        kind: {
            "p50_ms": statistics.median(r[0] for r in rs) * 1e3,
            "p99_ms": statistics.median(r[1] for r in rs) * 1e3,
            "runs_ms": [(r[0] * 1e3, r[1] * 1e3) for r in rs],
        }
        for kind, rs in runs.items()
    }


# ---------------------------------------------------------------- throughput, 2 processes


async def writer_process(args: argparse.Namespace) -> dict[str, Any]:
    """One of the 2 processes: `args.writers` tasks appending and committing."""
    directory = Path(args.dir)
    batches = make_batches(64, seed=args.seed)
    lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT)
    flushes: list[tuple[float, int]] = []
    journal = open_journal(args.kind, directory, lambda s, n: flushes.append((s, n)))
    latencies: list[float] = []
    waits: list[float] = []
    committed = 0
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    deadline = started + args.seconds

    async def writer(offset: int) -> None:
        nonlocal committed
        i = offset
        while time.perf_counter() < deadline:
            record = records.encode(batches[i % len(batches)])
            i += 1
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            journal.append(record)
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            appended = time.perf_counter()
            await journal.commit()
            latency = time.perf_counter() - appended
            latencies.append(latency)
            # The hook ran for the covering flush just before this task resumed.
            waits.append(max(0.0, latency - flushes[-1][0]) if flushes else 0.0)
            committed += EVENTS_PER_BATCH

    await asyncio.gather(*(writer(w) for w in range(args.writers)))
    elapsed = time.perf_counter() - started
    journal.close()
    return {
        "events": committed,
        "seconds": elapsed,
        "latencies": latencies,
        "waits": waits,
        "flush_seconds": [s for s, _ in flushes],
        "flush_records": [n for _, n in flushes],
    }


def bench_throughput(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, dict[int, list[dict[str, float]]]] = {k: {} for k in KINDS}
    total = args.repeat * len(KINDS) * len(args.writers)
    done = 0
    for repeat in range(args.repeat):
        for writers in args.writers:
            for kind in KINDS:
                done += 1
                progress(
                    f"[throughput {directory}] {done}/{total}: {kind}, 2 x {writers} writers,"
                    f" run {repeat + 1}/{args.repeat}"
                )
                row = run_pair(kind, directory, writers, args)
                rows[kind].setdefault(writers, []).append(row)
    return {
        kind: {
            str(writers): {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            | {"runs_events_per_s": [run["events_per_s"] for run in runs]}
            for writers, runs in by_writers.items()
        }
        for kind, by_writers in rows.items()
    }


def run_pair(
    kind: str, directory: Path, writers: int, args: argparse.Namespace
) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(dir=directory))
    command = [sys.executable, __file__, "_writer", "--kind", kind, "--dir", str(work)]
    command += ["--writers", str(writers), "--seconds", str(args.seconds)]
    outs = [work / f"figures-{seed}.json" for seed in (1, 2)]
    procs = [
        subprocess.Popen(
            [*command, "--seed", str(seed), "--out", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed, out in zip((1, 2), outs, strict=True)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc, out in zip(procs, outs, strict=True):
        proc.communicate(timeout=args.seconds + 120)
        assert proc.returncode == 0, f"{kind} writer exited {proc.returncode}"
        results.append(json.loads(out.read_text()))
    shutil.rmtree(work)
    latencies = [x for r in results for x in r["latencies"]]
    waits = [x for r in results for x in r["waits"]]
    flush_seconds = [x for r in results for x in r["flush_seconds"]]
    flush_records = [x for r in results for x in r["flush_records"]]
    return {
        "events_per_s": sum(r["events"] / r["seconds"] for r in results),
        "commit_p50_ms": pct(latencies, 0.5) * 1e3,
        "commit_p99_ms": pct(latencies, 0.99) * 1e3,
        "wait_p50_ms": pct(waits, 0.5) * 1e3,
        "wait_p99_ms": pct(waits, 0.99) * 1e3,
        "flush_p50_ms": pct(flush_seconds, 0.5) * 1e3,
        "flush_p99_ms": pct(flush_seconds, 0.99) * 1e3,
        "records_per_flush": sum(flush_records) / len(flush_records),
        "flushes_per_s": len(flush_records) / args.seconds,
    }


# ---------------------------------------------------------------- replay, snapshot


def fill(kind: str, directory: Path, batches: list[FeedbackBatch], copies: int) -> list[Path]:
    """Write `copies` rounds of `batches`, commit, and return the files written."""

    async def write() -> None:
        journal = open_journal(kind, directory, lambda s, n: None)
        for _ in range(copies):
            for batch in batches:
                journal.append(records.encode(batch))
            await journal.commit()
        journal.close()

    uvloop.run(write())
    if kind == "journal":
        return [segment_path(directory, 1)]
    return [p for p in directory.iterdir() if p.name.startswith("journal.db")]


def bench_replay(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    batches = make_batches(100, seed=3)
    copies = args.replay_events // (EVENTS_PER_BATCH * len(batches))
    out: dict[str, Any] = {}
    for kind in KINDS:
        runs: dict[str, list[float]] = {"warm_s": [], "cold_s": []}
        for repeat in range(args.repeat):
            progress(f"[replay {directory}] {kind} run {repeat + 1}/{args.repeat}")
            work = Path(tempfile.mkdtemp(dir=directory))
            files = fill(kind, work, batches, copies)
            for state in ("cold_s", "warm_s"):
                if state == "cold_s":
                    evict(files)
                started = time.perf_counter()
                if kind == "journal":
                    events = sum(len(b.events) for b in replay(work, 0))
                else:
                    events = sum(len(b.events) for b in sqlite_journal.replay(work / "journal.db"))
                runs[state].append(time.perf_counter() - started)
                assert events == copies * len(batches) * EVENTS_PER_BATCH
            out.setdefault(kind, {})["bytes"] = sum(p.stat().st_size for p in files)
            shutil.rmtree(work)
        out[kind] |= {key: statistics.median(v) for key, v in runs.items()}
        out[kind]["runs"] = runs
    out["events"] = copies * len(batches) * EVENTS_PER_BATCH
    return out


def bench_snapshot(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    payload = os.urandom(40 * 1_000_000)  # 1M arms x 40 bytes
    runs: dict[str, list[float]] = {"write_s": [], "read_warm_s": [], "read_cold_s": []}
    for repeat in range(args.repeat):
        progress(f"[snapshot {directory}] run {repeat + 1}/{args.repeat}")
        work = Path(tempfile.mkdtemp(dir=directory))
        started = time.perf_counter()
        write_snapshot(work, 7, payload)
        runs["write_s"].append(time.perf_counter() - started)
        for state in ("read_cold_s", "read_warm_s"):
            if state == "read_cold_s":
                evict([work / "snapshot.bin"])
            started = time.perf_counter()
            got = read_snapshot(work)
            runs[state].append(time.perf_counter() - started)
            assert got is not None and got[0] == 7 and len(got[1]) == len(payload)
        shutil.rmtree(work)
    return {key: statistics.median(v) for key, v in runs.items()} | {"runs": runs}


# ---------------------------------------------------------------- report


def default_dirs() -> list[Path]:
    dirs = [HERE.parent]
    if os.stat("/tmp").st_dev != os.stat(HERE.parent).st_dev:
        dirs.append(Path("/tmp"))
    return dirs


def report(results: dict[str, Any]) -> None:
    for place, parts in results.items():
        print(f"\n## {place}")
        if "fsync" in parts:
            print("\none small write + fsync (SQLite: INSERT + COMMIT), ms  p50 / p99:")
            for kind, row in parts["fsync"].items():
                print(f"  {kind:8} {row['p50_ms']:7.3f} / {row['p99_ms']:7.3f}")
        if "throughput" in parts:
            print(
                "\n2 processes x writers, batches of 100 events:\n"
                f"  {'kind':8} {'writers':>7} {'events/s':>10} {'commit p50/p99 ms':>18}"
                f" {'wait p50/p99 ms':>16} {'flush p50/p99 ms':>17} {'rec/flush':>9}"
            )
            for kind, by_writers in parts["throughput"].items():
                for writers, row in by_writers.items():
                    print(
                        f"  {kind:8} {writers:>7} {row['events_per_s']:>10,.0f}"
                        f" {row['commit_p50_ms']:>8.2f} / {row['commit_p99_ms']:<7.2f}"
                        f" {row['wait_p50_ms']:>7.2f} / {row['wait_p99_ms']:<6.2f}"
                        f" {row['flush_p50_ms']:>7.2f} / {row['flush_p99_ms']:<7.2f}"
                        f" {row['records_per_flush']:>9.1f}"
                    )
        if "replay" in parts:
            rep = parts["replay"]
            print(f"\nreplay of {rep['events']:,} events, s (warm / evicted), file MB:")
            for kind in KINDS:
                row = rep[kind]
                print(
                    f"  {kind:8} {row['warm_s']:.2f} / {row['cold_s']:.2f}"
                    f"   {row['bytes'] / 1e6:.1f}"
                )
        if "snapshot" in parts:
            snap = parts["snapshot"]
            print(
                f"\nsnapshot of 40 MB: write {snap['write_s'] * 1e3:.0f} ms, read"
                f" {snap['read_warm_s'] * 1e3:.0f} ms warm / {snap['read_cold_s'] * 1e3:.0f}"
                " ms evicted"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command")
    child = sub.add_parser("_writer", help="(internal) one writer process")
    child.add_argument("--kind", choices=KINDS, required=True)
    child.add_argument("--dir", required=True)
    child.add_argument("--writers", type=int, required=True)
    child.add_argument("--seconds", type=float, required=True)
    child.add_argument("--seed", type=int, required=True)
    child.add_argument("--out", type=Path, required=True, help="its figures, as JSON")
    ap.add_argument("--dirs", type=Path, nargs="+", help="where to measure (default: see above)")
    ap.add_argument(
        "--only", nargs="+", choices=["fsync", "throughput", "replay", "snapshot"], help="parts"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 8, 64], help="per process")
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    ap.add_argument("--small-writes", type=int, default=300, help="per fsync run")
    ap.add_argument("--replay-events", type=int, default=1_000_000)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    if args.command == "_writer":
        # A file, not stdout: after uvloop.run() returned, a print of over 64 KB to a
        # pipe kept only what the pipe had room for (uvloop 0.23), with no error.
        args.out.write_text(json.dumps(uvloop.run(writer_process(args))))
        return 0

    parts = {
        "fsync": bench_fsync,
        "throughput": bench_throughput,
        "replay": bench_replay,
        "snapshot": bench_snapshot,
    }
    results: dict[str, Any] = {}
    for base in args.dirs or default_dirs():
        place = Path(tempfile.mkdtemp(prefix=".journal-bench-", dir=base))
        try:
            results[str(base)] = {
                name: part(place, args)
                for name, part in parts.items()
                if not args.only or name in args.only
            }
        finally:
            shutil.rmtree(place)
    progress("")
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
