#!/usr/bin/env python3
"""Where a /predict's latency goes under wrk: in the server, or between its answer
and the connection's next request; per worker, and per 0.25 s window.

    python bench/tail.py                          # 4,000 ids, c=64, 10 s
    python bench/tail.py --items 400 --conns 256
    python bench/tail.py -- --workers 1           # what follows -- goes to mab serve

Starts `mab serve` with two aiohttp methods wrapped to take timestamps (a diagnostic:
the server it measures is otherwise the shipped one): when a request's first bytes
are read, and when its answer is written (with what the transport still buffers).
Each worker writes its records when it stops. bench/RESULTS.md, section 0, has a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py)
import run  # noqa: E402  (bench/run.py: start a server, run wrk)

WINDOW_S = 0.25
Record = tuple[int, float, float, int]  # connection, first byte read, answer written, unsent


def serve_traced(out: Path, serve_args: list[str]) -> None:
    """`mab serve serve_args`, its workers timing each request into `out`."""
    import os

    from aiohttp import web_protocol
    from aiohttp.web_response import Response

    from mab import cli, worker

    records: list[Record] = []
    reading: dict[int, float] = {}  # connection -> first byte of the request in progress

    data_received = web_protocol.RequestHandler.data_received

    def timed_data_received(self: web_protocol.RequestHandler, data: bytes) -> None:
        reading.setdefault(id(self), time.perf_counter())
        data_received(self, data)

    write_eof = Response.write_eof

    async def timed_write_eof(self: Response, data: bytes = b"") -> None:
        request = self._req  # write_eof clears it
        await write_eof(self, data)
        protocol = request.protocol if request is not None else None
        if protocol is None or protocol.transport is None:
            return
        started = reading.pop(id(protocol), None)
        if started is not None:
            unsent = protocol.transport.get_write_buffer_size()
            records.append((id(protocol), started, time.perf_counter(), unsent))

    run_worker = worker.run_worker

    def recording_worker(*args: object, **kwargs: object) -> int:
        try:
            return run_worker(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            (out / f"{os.getpid()}.json").write_text(json.dumps(records))

    web_protocol.RequestHandler.data_received = timed_data_received  # type: ignore[method-assign]
    Response.write_eof = timed_write_eof  # type: ignore[method-assign]
    worker.run_worker = recording_worker
    sys.argv = ["mab", "serve", *serve_args]
    cli.main()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report(out: Path, start: float) -> None:
    """The records of requests read from `start` (time.perf_counter, which is
    CLOCK_MONOTONIC: one clock for every process)."""
    by_worker = {p.stem: [tuple(r) for r in json.loads(p.read_text())] for p in out.glob("*.json")}
    server, client = [], []
    unsent = 0
    print(
        f"{'worker':>8}{'conns':>7}{'req/s':>8}{'mean ms':>9}{'p99 ms':>8}"
        f"   req/s per {WINDOW_S:g} s window: min-max"
    )
    for pid, records in sorted(by_worker.items()):
        conns: dict[int, list[Record]] = defaultdict(list)
        for record in records:
            if record[1] >= start:  # wrk's warm-up connections are gone
                conns[record[0]].append(record)  # type: ignore[arg-type]
        times: list[float] = []
        windows: dict[int, int] = defaultdict(int)
        for rs in conns.values():
            rs.sort(key=lambda r: r[1])
            for (_, read, written, left), nxt in zip(rs, [*rs[1:], None], strict=True):
                times.append(written - read)
                windows[int((written - start) / WINDOW_S)] += 1
                unsent += left > 0
                if nxt is not None:
                    client.append(nxt[1] - written)
        server += times
        last = max(windows, default=0)  # partly measured: left out of the rates
        span = last * WINDOW_S if last else 1.0
        rates = [count / WINDOW_S for w, count in windows.items() if w < last]
        print(
            f"{pid:>8}{len(conns):>7}{len(times) / span:>8.0f}"
            f"{statistics.mean(times) * 1e3:>9.1f}{pct(times, 0.99) * 1e3:>8.1f}"
            f"   {min(rates, default=0):.0f}-{max(rates, default=0):.0f}"
        )
    print(f"\n{len(server)} requests; {unsent} answers not fully written at once")
    print(f"{'span':<54}{'mean':>7}{'p50':>7}{'p90':>7}{'p99':>7}  ms")
    for name, values in (
        ("server: request's first byte read -> answer written", server),
        ("client: answer written -> next request read", client),
    ):
        print(
            f"{name:<54}{statistics.mean(values) * 1e3:>7.1f}{pct(values, 0.5) * 1e3:>7.1f}"
            f"{pct(values, 0.9) * 1e3:>7.1f}{pct(values, 0.99) * 1e3:>7.1f}"
        )


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-traced":  # the server side of a run
        serve_traced(Path(sys.argv[2]), sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=4000, help="ids per request (400 or 4000)")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of wrk")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk not measured")
    ap.add_argument("--data", type=Path, default=HERE / "data", help="catalog and bodies")
    ap.add_argument("serve_args", nargs="*", help="more `mab serve` flags, after --")
    args = ap.parse_args()

    data = catalog.write(args.data, sizes=(args.items,))
    body = data / f"req{args.items}.json"
    with tempfile.TemporaryDirectory(prefix="mab-tail-") as tmp:
        out = Path(tmp)
        cmd = (
            f"{sys.executable} {Path(__file__).resolve()} --serve-traced {out} "
            f"--port {{port}} --catalog {{catalog}} {' '.join(args.serve_args)}"
        )
        with run.started("mab", cmd, data) as target:
            run.wrk(target.url, body, args.conns, args.warmup, threads=1)
            start = time.perf_counter()
            result = run.wrk(target.url, body, args.conns, args.duration, threads=1)
        print(
            f"wrk: {result['rps']:.0f} requests/s, p50 {result['p50_us'] / 1e3:.1f} ms, "
            f"p99 {result['p99_us'] / 1e3:.1f} ms, {result['non2xx']} non-2xx\n"
        )
        report(out, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
