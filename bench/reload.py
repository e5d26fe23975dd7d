#!/usr/bin/env python3
"""SIGHUP under load: wrk posts 400-id bodies while the catalog is replaced and reloaded.

    python bench/reload.py                      # c=64, 12 s, reloads at 3, 6 and 9 s
    python bench/reload.py --conns 256 --reloads 5

Starts `mab serve` on a copy of the benchmark catalog, runs wrk, and during the run
rewrites the catalog (its counts change, its size does not) and sends SIGHUP, again and
again. Prints wrk's totals (non-2xx answers and socket errors are the failures), the
reloads the server logged, and how long each took from the signal to the log line.
bench/RESULTS.md, section 8.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import catalog  # noqa: E402  (bench/catalog.py, beside this script)
from run import free_port, wait_healthy  # noqa: E402


def rewrite(path: Path, generation: int) -> None:
    """The same arms with other counts: a new batch computation."""
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        arm, successes, failures = line.split(",")
        out.append(f"{arm},{failures},{successes}" if generation % 2 else line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    os.replace(tmp, path)  # as a batch job would publish it: whole, at once


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--reloads", type=int, default=3)
    ap.add_argument("--data", type=Path, default=HERE / "data")
    args = ap.parse_args()
    data = catalog.write(args.data, sizes=(400,))
    work = Path(tempfile.mkdtemp(prefix="mab-reload-"))
    arms = work / "arms.csv"
    shutil.copy(data / "arms.csv", arms)
    log = work / "server.log"
    port = free_port()
    cmd = [sys.executable, "-m", "mab", "serve", "--port", str(port), "--catalog", str(arms)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    lua = work / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{data / "req400.json"}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    sent: list[float] = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)

        def reloads() -> None:
            gap = args.seconds / (args.reloads + 1)
            for generation in range(1, args.reloads + 1):
                time.sleep(gap)
                rewrite(arms, generation)
                sent.append(time.time())
                proc.send_signal(signal.SIGHUP)

        thread = threading.Thread(target=reloads)
        thread.start()
        argv = ["wrk", "-t1", f"-c{args.conns}", f"-d{args.seconds}s", "-s", str(lua)]
        result = subprocess.run([*argv, f"{url}/predict"], capture_output=True, text=True).stdout
        thread.join()
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    loaded = [e for e in events if e.get("event") == "catalog reloaded"]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", result)
    errors = re.search(r"Socket errors: (.*)", result)
    summary = {
        "requests": int(re.search(r"(\d+) requests in", result).group(1)),  # type: ignore[union-attr]
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1)),  # type: ignore[union-attr]
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
        "reloads_sent": len(sent),
        "reloads_done": len(loaded),
        "reload_load_s": [e["load_s"] for e in loaded],
        "retired_exits": sum(e.get("event") == "retired worker exited" for e in events),
        "crashed_workers": sum(e.get("event") == "worker exited" for e in events),
    }
    print(json.dumps(summary))
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
