#!/usr/bin/env python3
"""Slow-loris: many connections dripping request headers, and a normal client beside them.

    python bench/slowloris.py                      # 2,000 connections, 20 s
    python bench/slowloris.py --conns 500 -- --header-timeout 5

Opens `--conns` connections to a fresh `mab serve` and sends each one header line a
second, never finishing the request. Meanwhile a probe client on one keep-alive
connection posts a 400-id /predict every 10 ms. Prints the probe's latency (p50, p99,
max of its 200s) and how many slow connections the server closed and when, as one JSON
line. bench/RESULTS.md, section 8.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)
from overload import Probe  # noqa: E402
from run import free_port, wait_healthy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("serve_args", nargs="*", help="flags for mab serve (after --)")
    args = ap.parse_args()
    data = catalog.write(args.data, sizes=(400,))
    port = free_port()
    cmd = [sys.executable, "-m", "mab", "serve", "--port", str(port)]
    cmd += ["--catalog", str(data / "arms.csv"), "--no-access-log", *args.serve_args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    slow: list[socket.socket] = []
    closed_after: list[float] = []
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        started = time.monotonic()
        for _ in range(args.conns):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /predict HTTP/1.1\r\n")
            sock.setblocking(False)
            slow.append(sock)
        probe = Probe(port, (data / "req400.json").read_bytes())
        probe.start()
        opened = {sock: time.monotonic() for sock in slow}
        watch = selectors.DefaultSelector()
        for sock in slow:
            watch.register(sock, selectors.EVENT_READ)
        line = 0
        while time.monotonic() - started < args.seconds:
            line += 1
            for sock in slow:
                try:
                    sock.send(f"X-Drip-{line}: a\r\n".encode())
                except OSError:
                    pass
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in watch.select(left):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data_in = sock.recv(4096)
                    except OSError:
                        data_in = b""
                    if not data_in:  # closed by the server
                        closed_after.append(time.monotonic() - opened[sock])
                        watch.unregister(sock)
                        slow.remove(sock)
                        sock.close()
        probe.stop.set()
        probe.join()
    finally:
        for sock in slow:
            sock.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    closed_after.sort()
    result = {
        "slow_connections": args.conns,
        "closed_by_server": len(closed_after),
        "closed_after_s": [round(closed_after[0], 2), round(closed_after[-1], 2)]
        if closed_after
        else None,
        "probe": probe.summary(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
