"""The table and the plot of bench/simulate.py, from its JSON."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from sim_policies import ARMS, CANDIDATES, TOP_K

LABELS = {
    "mab": "mab (HTTP)",
    "mabwiser-ts": "MABWiser Thompson",
    "eps-greedy": "epsilon-greedy (0.1)",
    "ucb1": "UCB1",
}
COLORS = {"mab": "C0", "mabwiser-ts": "C1", "eps-greedy": "C2", "ucb1": "C3"}


def label(name: str) -> str:
    """'mab-hl-5000' is mab with a half-life of 5,000 rounds (in seconds at the run's pace)."""
    if name.startswith("mab-hl-"):
        return f"mab --half-life ({int(name[7:]):,} rounds)"
    return LABELS[name]


def table(data: dict[str, Any]) -> str:
    """Final cumulative regret per policy, mean +- sd over seeds, and the ratio to MABWiser."""
    seeds = len(data["config"]["seeds"])
    lines = [
        f"cumulative regret after {data['config']['impressions']:,} impressions, "
        f"mean +- sd over {seeds} seeds (clicks lost against the best 10 of each round)"
    ]
    for scenario, results in data["results"].items():
        lines += ["", f"{scenario:<34}{'regret':>18}{'vs MABWiser':>13}{'rounds/s':>10}"]
        base = results.get("mabwiser-ts")
        base_mean = np.mean([s["final"] for s in base["seeds"]]) if base else math.nan
        for name, result in results.items():
            finals = [s["final"] for s in result["seeds"]]
            sd = float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0
            pace = np.mean([s["rounds_per_s"] for s in result["seeds"]])
            lines.append(
                f"{label(name):<34}{np.mean(finals):>10.1f} +- {sd:>5.1f}"
                f"{ratio(np.mean(finals), base_mean):>13}{pace:>10.0f}"
            )
            if name.startswith("mab-hl-"):
                hl = [s["half_life_s"] for s in result["seeds"]]
                hr = [s["half_life_rounds"] for s in result["seeds"]]
                lines.append(
                    f"{'':<4}--half-life {min(hl):.2f}-{max(hl):.2f} s over the seeds: "
                    f"{min(hr):,}-{max(hr):,} rounds at the pace of its own run"
                )
    return "\n".join(lines)


def ratio(value: float, base: float) -> str:
    return "-" if math.isnan(base) else f"{value / base:.3f}x"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    x = np.array(data["impressions"])
    scenarios = list(data["results"])
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.2 * len(scenarios), 4.6), squeeze=False)
    extra = iter(("C4", "C5", "C6", "C8", "C9"))
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for name, result in data["results"][scenario].items():
            curves = np.array([s["curve"] for s in result["seeds"]])
            mean, sd = curves.mean(axis=0), curves.std(axis=0)
            color = COLORS.get(name) or next(extra)
            ax.plot(x, mean, color=color, label=label(name), lw=1.6)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)
        if scenario == "drift":
            ax.axvline(data["config"]["impressions"] / 2, color="gray", ls=":", lw=1)
        ax.set_title(
            f"{scenario}" + (": 10% of the arms swap rates halfway" if scenario == "drift" else "")
        )
        ax.set_xlabel("impressions")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v else "0"))
        ax.set_ylabel("cumulative regret (clicks)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    seeds = len(data["config"]["seeds"])
    fig.suptitle(
        f"{ARMS} arms, {CANDIDATES} candidates and top {TOP_K} a round: "
        f"mean over {seeds} seeds, band +- 1 sd",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
