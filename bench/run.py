#!/usr/bin/env python3
"""Benchmark /predict under wrk: throughput and latency by concurrency and body size.

    python bench/run.py                          # starts mab on a 100k-arm catalog
    python bench/run.py --url http://HOST:PORT   # an already running server
    python bench/run.py --against-cmd "go-fasthttp {port} {catalog}"   # and a peer
    python bench/run.py --against http://HOST:PORT

Each point alternates the servers (A B A B ...) so drift on a shared machine hits
both. Prints a table and draws throughput and p99 vs concurrency into a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)


@dataclass
class Target:
    name: str
    url: str
    proc: psutil.Process | None  # the server's process when we started it

    def cpu_seconds(self) -> float:
        return float("nan") if self.proc is None else tree_cpu(self.proc)


def tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of a process and all its children (a server's tree)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy in {timeout} s")


@contextmanager
def started(name: str, cmd: str, data: Path) -> Iterator[Target]:
    port = free_port()
    argv = shlex.split(cmd.format(port=port, catalog=data / "arms.csv"))
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        yield Target(name, url, psutil.Process(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, body: Path, conns: int, seconds: float, threads: int) -> dict[str, float]:
    argv = [
        "wrk",
        f"-t{min(threads, conns)}",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    argv += ["-s", str(HERE / "predict.lua"), f"{url}/predict"]
    out = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "MAB_BODY": str(body)}, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith('{"requests"'))
    result: dict[str, float] = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure(target: Target, body: Path, items: int, conns: int, args: argparse.Namespace) -> dict:
    wrk(target.url, body, conns, args.warmup, args.threads)
    cpu0 = target.cpu_seconds()
    result = wrk(target.url, body, conns, args.duration, args.threads)
    cpu = target.cpu_seconds() - cpu0
    result["cpu_us_per_prediction"] = cpu / max(1, result["requests"] * items) * 1e6
    return {"server": target.name, "items": items, "conns": conns, **result}


def table(rows: list[dict]) -> str:
    head = f"{'server':<10}{'items':>6}{'conns':>6}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}"
    head += f"{'non2xx':>8}{'sock err':>9}{'cpu us/pred':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['server']:<10}{r['items']:>6}{r['conns']:>6}{r['rps']:>10.0f}"
            f"{r['p50_us'] / 1e3:>9.2f}{r['p99_us'] / 1e3:>9.2f}{r['non2xx']:>8}"
            f"{r['socket_errors']:>9}{r['cpu_us_per_prediction']:>12.3f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["items"] for r in rows})
    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 3.6 * len(sizes)), squeeze=False)
    for row_axes, items in zip(axes, sizes, strict=True):
        for server in dict.fromkeys(r["server"] for r in rows):
            points = sorted(
                (r for r in rows if r["items"] == items and r["server"] == server),
                key=lambda r: r["conns"],
            )
            conns = [p["conns"] for p in points]
            row_axes[0].plot(conns, [p["rps"] for p in points], marker="o", label=server)
            row_axes[1].plot(conns, [p["p99_us"] / 1e3 for p in points], marker="o", label=server)
        for ax, what in zip(row_axes, ("requests / s", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(what)
            ax.set_title(f"{items} items per request: {what}")
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="benchmark this running server instead of starting mab")
    ap.add_argument(
        "--server-cmd",
        default=f"{sys.executable} -m mab serve --port {{port}} --catalog {{catalog}}",
        help="how to start mab ({port}, {catalog} filled in)",
    )
    ap.add_argument("--against", help="URL of a second running server to compare")
    ap.add_argument("--against-cmd", help="command that starts a second server ({port}, {catalog})")
    ap.add_argument("--name", default="mab")
    ap.add_argument("--against-name", default="peer")
    ap.add_argument("--items", type=int, nargs="+", default=[400, 4000])
    ap.add_argument("--conns", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per point")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--data", type=Path, default=HERE / "data", help="catalog and bodies")
    ap.add_argument("--png", type=Path, default=HERE / "throughput.png")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    data = catalog.write(args.data, sizes=tuple(args.items))
    with (
        _target(args.name, args.url, args.server_cmd, data) as a,
        _maybe(args.against_name, args.against, args.against_cmd, data) as b,
    ):
        targets = [t for t in (a, b) if t is not None]
        points = [(n, c) for n in args.items for c in args.conns]
        rows: list[dict] = []
        total = len(points) * len(targets)
        for n, c in points:
            for target in targets:
                done = len(rows) + 1
                print(
                    f"\r[{done}/{total}] {target.name} items={n} conns={c} ...   ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(measure(target, data / f"req{n}.json", n, c, args))
        print(file=sys.stderr)
    print(table(rows))
    plot(rows, args.png)
    print(f"plot: {args.png}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


@contextmanager
def _target(name: str, url: str | None, cmd: str, data: Path) -> Iterator[Target]:
    if url:
        wait_healthy(url)
        yield Target(name, url.rstrip("/"), None)
    else:
        with started(name, cmd, data) as target:
            yield target


@contextmanager
def _maybe(name: str, url: str | None, cmd: str | None, data: Path) -> Iterator[Target | None]:
    if url is None and cmd is None:
        yield None
    else:
        with _target(name, url, cmd or "", data) as target:
            yield target


if __name__ == "__main__":
    raise SystemExit(main())
