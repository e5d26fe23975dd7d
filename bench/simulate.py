#!/usr/bin/env python3
"""Regret simulation: does mab learn from /feedback as well as offline bandits do?

    python bench/simulate.py                            # 5 seeds x 2 scenarios, starts mab
    python bench/simulate.py --impressions 20000 --seeds 2
    python bench/simulate.py --url http://127.0.0.1:8080  # drive a running server
    python bench/simulate.py --replot bench/out/regret.json

The problem: 1,000 arms whose true click rates are drawn from Beta(2, 60). Each round
draws 200 candidates, a policy shows 10 of them, each shown item is clicked with its true
rate, and the 10 outcomes go back to the policy (for mab: POST /feedback, before the next
POST /predict, on one keep-alive connection). Regret of a round = the 10 best true rates
among the candidates - the true rates of the 10 shown, summed over rounds.

Policies: mab over HTTP, MABWiser's Thompson sampler, epsilon-greedy and UCB1 (in
process). The candidates and the click draws of a round come from (seed, round), so every
policy faces the same rounds. "drift" swaps the rates of the 50 best and the 50 worst
arms halfway, and adds mab with --half-life. Writes a table, a JSON file and a PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
# bench/sim_policies.py and bench/sim_report.py, beside this script
from sim_policies import (  # noqa: E402
    ARMS,
    CANDIDATES,
    TOP_K,
    UCB1,
    EpsilonGreedy,
    Floats,
    Ints,
    MabServer,
    MABWiserThompson,
    Policy,
)
from sim_report import plot, table  # noqa: E402

RATE_PRIOR = (2.0, 60.0)  # true click rates ~ Beta(2, 60): mean 3.2%
DRIFT_FRACTION = 0.10  # share of arms whose rates are swapped at the switch

# Tags keep the random streams of (seed, ...) apart: rates, rounds, each policy.
_RATES, _ROUNDS, _POLICY = 1, 2, 3

POLICIES = ("mab", "mab-hl", "mabwiser-ts", "eps-greedy", "ucb1")
SCENARIOS = ("stationary", "drift")


# The problem ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One seed's arms and rounds; `after` are the rates from round `switch` on."""

    seed: int
    rates: Floats
    after: Floats
    switch: int
    candidates: Ints  # (rounds, CANDIDATES) arm indices
    uniforms: Floats  # (rounds, CANDIDATES): candidate j is clicked if u < its rate

    @property
    def rounds(self) -> int:
        return len(self.candidates)

    def rates_at(self, r: int) -> Floats:
        return self.rates if r < self.switch else self.after


def draw_rounds(seed: int, rounds: int) -> tuple[Ints, Floats]:
    """Each round's candidates and click uniforms, from its own (seed, round) stream."""
    candidates = np.empty((rounds, CANDIDATES), dtype=np.int64)
    uniforms = np.empty((rounds, CANDIDATES))
    for r in range(rounds):
        rng = np.random.default_rng([seed, _ROUNDS, r])
        candidates[r] = rng.choice(ARMS, CANDIDATES, replace=False)
        uniforms[r] = rng.random(CANDIDATES)
    return candidates, uniforms


def swap_extremes(rates: Floats) -> Floats:
    """Swap the rates of the best and worst arms pairwise (best with worst, 2nd with 2nd...).

    A model that learnt the old rates keeps showing the old best, which now barely
    click, and has next to no evidence on the new best, which it had learnt to skip.
    """
    pairs = int(len(rates) * DRIFT_FRACTION) // 2
    order = np.argsort(rates)
    worst, best = order[:pairs], order[::-1][:pairs]
    after = rates.copy()
    after[best], after[worst] = rates[worst], rates[best]
    return after


def problem(seed: int, scenario: str, rounds: int, draws: tuple[Ints, Floats]) -> Problem:
    rates = np.random.default_rng([seed, _RATES]).beta(*RATE_PRIOR, ARMS)
    if scenario == "drift":
        return Problem(seed, rates, swap_extremes(rates), rounds // 2, *draws)
    return Problem(seed, rates, rates, rounds, *draws)


def simulate(policy: Policy, prob: Problem, bar: tqdm[Any]) -> Floats:
    """Run every round; return the regret of each round."""
    regret = np.empty(prob.rounds)
    step = max(1, prob.rounds // 200)
    for r in range(prob.rounds):
        candidates = prob.candidates[r]
        rates = prob.rates_at(r)[candidates]
        shown = policy.rank(candidates, r)
        if len(set(shown.tolist())) != TOP_K:
            raise SystemExit(f"round {r}: the policy showed {shown.tolist()}, not {TOP_K} items")
        clicks = prob.uniforms[r, shown] < rates[shown]
        policy.update(candidates[shown], clicks, r)
        regret[r] = np.partition(rates, -TOP_K)[-TOP_K:].sum() - rates[shown].sum()
        if r % step == step - 1:
            bar.update(step)
    bar.update(prob.rounds % step)
    return regret


# The server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=1)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy in {timeout} s")


def write_catalog(path: Path) -> Path:
    """Every arm listed with 0 successes and 0 failures: all start at the prior."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"arm_{a:04d},0,0\n" for a in range(ARMS))
    path.write_text("arm_id,successes,failures\n" + rows)
    return path


@contextlib.contextmanager
def served(args: argparse.Namespace, half_life: float | None) -> Iterator[str]:
    """A fresh server from --server-cmd; SIGTERM at the end."""
    port = free_port()
    argv = shlex.split(
        args.server_cmd.format(
            python=sys.executable, port=port, workers=args.workers, catalog=args.catalog
        )
    )
    if args.prior != (1, 1):
        argv += ["--prior-alpha", str(args.prior[0]), "--prior-beta", str(args.prior[1])]
    if half_life is not None:
        argv += ["--half-life", f"{half_life:.6g}"]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_healthy(url, proc)
            except SystemExit:
                errors.seek(0)
                sys.stderr.write(errors.read().decode(errors="replace")[-3000:])
                raise
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# Running it all ------------------------------------------------------------------------


@dataclass
class Run:
    regret: Floats
    seconds: float
    half_life_s: float | None = None
    wrong_arms: int | None = None


class Runner:
    def __init__(self, args: argparse.Namespace, bar: tqdm[Any]) -> None:
        self.args, self.bar = args, bar
        self.pace: float | None = None  # rounds/s of the last mab run, for --half-life

    def half_life(self, rounds: float) -> float:
        """The server's clock is wall time: the half-life in rounds at the plain run's pace."""
        if self.args.half_life is not None:
            return float(self.args.half_life)
        if self.pace is None:
            raise SystemExit("mab-hl needs --half-life SECONDS, or the plain mab policy first")
        return rounds / self.pace

    def run(self, name: str, prob: Problem, scenario: str) -> Run:
        if name == "mab" or name.startswith("mab-hl-"):
            return self.run_server(name, prob, scenario)
        seed = prob.seed
        rng = np.random.default_rng([seed, _POLICY, POLICIES.index(name)])
        started = time.perf_counter()
        if name == "mabwiser-ts":
            regret = simulate(MABWiserThompson(seed, self.args.prior), prob, self.bar)
        elif name == "eps-greedy":
            regret = simulate(EpsilonGreedy(rng, 0.1), prob, self.bar)
        else:
            regret = simulate(UCB1(rng), prob, self.bar)
        return Run(regret, time.perf_counter() - started)

    def run_server(self, name: str, prob: Problem, scenario: str) -> Run:
        hl = name.startswith("mab-hl-")
        half_life = self.half_life(float(name[7:])) if hl else None
        url = self.args.half_life_url if hl else self.args.url
        with contextlib.ExitStack() as stack:
            if url:
                wait_healthy(url, None)
                # A running server keeps what earlier runs taught it: fresh ids start at
                # the prior (unknown ids are scored from it, and /feedback adds them).
                prefix = f"sim-{scenario}-{prob.seed}-{time.time_ns()}-"
            else:
                url = stack.enter_context(served(self.args, half_life))
                prefix = ""
            client = MabServer(url, np.random.default_rng([prob.seed, _POLICY]), prefix)
            stack.callback(client.close)
            started = time.perf_counter()
            regret = simulate(client, prob, self.bar)
            seconds = time.perf_counter() - started
            # With a half-life the server's counts have decayed, so they differ by design.
            wrong = client.check_arms() if half_life is None and name == "mab" else None
        if name == "mab":
            self.pace = prob.rounds / seconds
        return Run(regret, seconds, half_life, wrong)


def policies_for(scenario: str, chosen: list[str], half_lives: list[int]) -> list[str]:
    """mab-hl runs in drift only, once per half-life (names 'mab-hl-ROUNDS')."""
    names = []
    for p in chosen:
        if p != "mab-hl":
            names.append(p)
        elif scenario == "drift":
            names += [f"mab-hl-{h}" for h in half_lives]
    return names


def main() -> int:
    args = parse_args()
    if args.replot:
        earlier = json.loads(args.replot.read_text())
        print(table(earlier))
        plot(earlier, args.png)
        print(f"plot: {args.png}")
        return 0
    if args.impressions % TOP_K:
        raise SystemExit(f"--impressions must be a multiple of {TOP_K}")
    rounds = args.impressions // TOP_K
    policies = args.policies.split(",")
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise SystemExit(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    scenarios = args.scenarios.split(",")
    if not args.url:
        args.catalog = write_catalog(args.out.parent / f"sim-catalog-{ARMS}.csv")
    runs = [(sc, p) for sc in scenarios for p in policies_for(sc, policies, args.half_life_rounds)]
    if "mab-hl" in policies and not (args.url is None or args.half_life_url):
        raise SystemExit("with --url, mab-hl needs --half-life-url (a server with --half-life)")

    data: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "config": {
            "arms": ARMS,
            "candidates": CANDIDATES,
            "top_k": TOP_K,
            "rate_prior": RATE_PRIOR,
            "impressions": args.impressions,
            "rounds": rounds,
            "seeds": list(range(args.seed0, args.seed0 + args.seeds)),
            "workers": args.workers,
            "server": args.url or args.server_cmd,
            "drift": f"round {rounds // 2}: the {int(ARMS * DRIFT_FRACTION) // 2} best and "
            "worst arms swap rates pairwise",
            "half_life_rounds": args.half_life_rounds,
            "half_life_s": args.half_life,
            "prior": args.prior,
        },
        "results": {sc: {} for sc in scenarios},
    }
    step = max(1, rounds // 200)
    keep = np.arange(step - 1, rounds, step)
    data["impressions"] = ((keep + 1) * TOP_K).tolist()
    total = rounds * len(runs) * args.seeds
    interval = 0.5 if sys.stderr.isatty() else 60.0  # a log file gets a line a minute
    with tqdm(total=total, unit="round", mininterval=interval, dynamic_ncols=True) as bar:
        runner = Runner(args, bar)
        for seed in data["config"]["seeds"]:
            draws = draw_rounds(seed, rounds)
            for scenario, name in runs:
                bar.set_description(f"seed {seed} {scenario} {name}")
                run = runner.run(name, problem(seed, scenario, rounds, draws), scenario)
                cumulative = np.cumsum(run.regret)
                out = data["results"][scenario].setdefault(name, {"seeds": []})
                out["seeds"].append(
                    {
                        "seed": seed,
                        "final": float(cumulative[-1]),
                        "curve": np.round(cumulative[keep], 3).tolist(),
                        "seconds": round(run.seconds, 2),
                        "rounds_per_s": round(rounds / run.seconds, 1),
                        "half_life_s": run.half_life_s,
                        "half_life_rounds": None
                        if run.half_life_s is None
                        else round(run.half_life_s * rounds / run.seconds),
                        "arms_check_wrong": run.wrong_arms,
                    }
                )
                note = f"{rounds / run.seconds:6.0f} rounds/s"
                if run.half_life_s is not None:
                    note += f", half-life {run.half_life_s:.2f} s"
                if run.wrong_arms:
                    note += f", {run.wrong_arms} of 20 arms' counts differ from what was posted"
                tqdm.write(
                    f"seed {seed} {scenario:<10} {name:<13} regret {cumulative[-1]:8.1f}  {note}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    print(table(data))
    plot(data, args.png)
    print(f"numbers: {args.out}\nplot: {args.png}")
    return 0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (default: 5)")
    ap.add_argument("--seed0", type=int, default=0, help="first seed (default: 0)")
    ap.add_argument(
        "--impressions",
        type=int,
        default=200_000,
        help="impressions per run, 10 a round (default: 200000)",
    )
    ap.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help=f"comma-separated (default: {','.join(POLICIES)}); mab-hl runs in drift only",
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated (default: {','.join(SCENARIOS)})",
    )
    ap.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start a fresh server per seed and scenario (default: on)",
    )
    ap.add_argument("--url", help="drive this running server instead (implies --no-serve)")
    ap.add_argument(
        "--half-life-url", help="with --url: a running server with --half-life, for mab-hl"
    )
    ap.add_argument(
        "--server-cmd",
        default="{python} -m mab serve --port {port} --workers {workers} "
        "--catalog {catalog} --no-access-log",
        help="how to start the server, from the repo ({python}, {port}, {workers}, "
        "{catalog} filled in; mab-hl appends --half-life S)",
    )
    ap.add_argument("--workers", type=int, default=2, help="server workers (default: 2)")
    ap.add_argument(
        "--half-life-rounds",
        type=_ints,
        default=[5000],
        metavar="R[,R...]",
        help="mab-hl's half-life in rounds, turned into seconds with the rounds/s "
        "of the seed's plain mab run; several give one mab-hl run each "
        "(default: 5000)",
    )
    ap.add_argument(
        "--half-life",
        type=float,
        help="mab-hl's half-life in seconds, as is "
        "(one --half-life-rounds value then only names the run)",
    )
    ap.add_argument(
        "--prior",
        type=_ints,
        default=[1, 1],
        metavar="A,B",
        help="Beta prior of mab (--prior-alpha/--prior-beta) and MABWiser (as "
        "pseudo-outcomes); integers >= 1 (default: 1,1)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=HERE / "out" / "regret.json",
        help="the numbers (default: bench/out/regret.json)",
    )
    ap.add_argument(
        "--png", type=Path, default=HERE / "regret.png", help="the plot (default: bench/regret.png)"
    )
    ap.add_argument(
        "--replot",
        type=Path,
        metavar="JSON",
        help="only print the table and draw the plot from an earlier run's JSON",
    )
    args = ap.parse_args()
    if not args.serve and not args.url:
        ap.error("--no-serve needs --url")
    if len(args.prior) != 2 or min(args.prior) < 1:
        ap.error("--prior takes two integers >= 1, e.g. 2,60")
    if args.half_life is not None and len(args.half_life_rounds) != 1:
        ap.error("--half-life SECONDS goes with one --half-life-rounds value")
    args.prior = tuple(args.prior)
    return args


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None


if __name__ == "__main__":
    raise SystemExit(main())
