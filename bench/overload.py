#!/usr/bin/env python3
"""Overload: wrk at c=64, then at c=2,000, with a probe client beside it.

    python bench/overload.py                          # mab with its defaults
    python bench/overload.py -- --max-wait 1000       # flags after -- go to mab serve

The server runs on the benchmark catalog (bench/catalog.py) with the access log off.
wrk posts 400-id bodies; a probe client on one keep-alive connection posts one every
10 ms and keeps each answer's status and latency, so the latency of the 200s is known
apart from the 503s. Prints one JSON line per concurrency. bench/RESULTS.md, section 8.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)
from run import free_port, tree_cpu, wait_healthy  # noqa: E402


def wrk(url: str, lua: str, conns: int, seconds: int, threads: int) -> dict[str, object]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", lua, url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"Socket errors: .* timeout (\d+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
        "p99_all": p99.group(1) if p99 else None,
    }


class Probe(threading.Thread):
    def __init__(self, port: int, body: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.body = port, body
        self.answers: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict", self.body, headers)
                response = conn.getresponse()
                response.read()
                self.answers.append((response.status, time.perf_counter() - started))
            except OSError:
                self.answers.append((0, time.perf_counter() - started))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            time.sleep(0.01)
        conn.close()

    def summary(self) -> dict[str, object]:
        ok = sorted(seconds for status, seconds in self.answers if status == 200)
        others: dict[int, int] = {}
        for status, _ in self.answers:
            if status != 200:
                others[status] = others.get(status, 0) + 1

        def ms(q: float) -> float | None:
            return round(ok[min(len(ok) - 1, int(q * len(ok)))] * 1e3, 1) if ok else None

        return {"n": len(self.answers), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
                "not_200": others}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("serve_args", nargs="*", help="flags for mab serve (after --)")
    args = ap.parse_args()
    data = catalog.write(args.data, sizes=(400,))
    body = (data / "req400.json").read_bytes()
    port = free_port()
    cmd = [sys.executable, "-m", "mab", "serve", "--port", str(port)]
    cmd += ["--catalog", str(data / "arms.csv"), "--no-access-log", *args.serve_args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local f = io.open("{data / "req400.json"}", "rb")\nwrk.body = f:read("*a")\n'
            "f:close()\n"
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        server = psutil.Process(proc.pid)
        for conns, seconds, threads in ((64, 8, 1), (2000, 10, 2)):
            probe = Probe(port, body)
            probe.start()
            cpu = tree_cpu(server)
            result = wrk(f"{url}/predict", lua.name, conns, seconds, threads)
            cpu = tree_cpu(server) - cpu
            probe.stop.set()
            probe.join()
            result["cpu_us_per_request"] = round(cpu / max(1, int(str(result["requests"]))) * 1e6)
            print(json.dumps({"conns": conns, **result, "probe": probe.summary()}), flush=True)
    finally:
        os.unlink(lua.name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
