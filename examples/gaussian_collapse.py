"""Shumailov et al.'s recursion on a Gaussian and a Gaussian mixture, with the guard checking every generation.

Each generation refits the model by maximum likelihood on samples of the previous generation
(replace), on fresh true samples (fresh, a control) or on the true samples plus every synthetic
sample so far (accumulate, Gerstgrasser et al. 2024, a control). Per regime the table shows the
fitted variance (mean over seeds; for replace next to the closed form ((n-1)/n)^(g+1) and the
mean of 2,000 simulated chains), for the mixture the rare mode's fitted mass and smallest weight,
the ground-truth quality, the val_loss an EarlyStopping user would watch, and what the guard said.

    python examples/gaussian_collapse.py [--scenario both|gaussian|gmm] [--seeds 3] [--generations G] [--n N]

Defaults: gaussian n=300 for 120 generations, gmm n=500 for 30 (about 15 s of CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.demos.recursion import (
    DEFAULT_N,
    RARE_MODE_EDGE,
    TRUE_GMM,
    expected_variance,
    expected_variance_sd,
    run_scenario,
    simulate_variance_chains,
)

DEFAULT_GENERATIONS = {"gaussian": 120, "gmm": 30}
CHAINS = 2000


def alert_summary(rows: list[GenerationRecord]) -> str:
    """How many seeds warned / went critical, and which metrics (``!`` marks a critical one)."""
    worst: dict[str, str] = {}
    for r in rows:
        for a in r.alerts:
            if worst.get(a["metric"]) != "critical":
                worst[a["metric"]] = a["severity"]
    crit = sum(r.severity == "critical" for r in rows)
    warn = sum(r.severity == "warn" for r in rows)
    if not worst:
        return "-"
    names = ", ".join(m + ("!" if s == "critical" else "") for m, s in sorted(worst.items()))
    return f"{crit} crit, {warn} warn: {names}"


def first(run: list[GenerationRecord], severity: str | None = None, metric: str | None = None) -> int | None:
    """First generation with an alert of ``severity`` (any if None) on ``metric`` (any if None)."""
    for r in run:
        if any((severity is None or a["severity"] == severity) and (metric is None or a["metric"] == metric)
               for a in r.alerts):
            return r.generation
    return None


def table(scenario: str, regime: str, runs: list[list[GenerationRecord]], n: int, every: int,
          sim: np.ndarray | None) -> None:
    gmm, closed = scenario == "gmm", regime == "replace" and scenario == "gaussian"
    k = len(runs)
    head = "  gen | fit variance: mean over seeds |"
    head += f" closed form ± SE of {k} | {CHAINS} chains ± SE |" if closed else ""
    head += " rare-mode mass | min weight | rare NLL rise | bulk NLL rise |" if gmm else " fit outer-2% mass |"
    head += " quality (median) | val_loss | health | guard alerts (over seeds)"
    print(head)
    generations = len(runs[0]) - 1
    for g in sorted({*range(0, generations + 1, every), generations}):
        rows = [run[g] for run in runs]
        # NLL rises are per seed, from the seed's own generation 0
        mean = {key: float(np.mean([r.metrics[key] - (run[0].metrics[key] if key.endswith("_nll") else 0.0)
                                    for r, run in zip(rows, runs, strict=True)]))
                for key in rows[0].metrics if key.startswith("fit_")}
        line = f"  {g:>3} | {mean['fit_variance']:>28.4f} |"
        if closed:
            sd = float(expected_variance_sd(g + 1, n))
            line += (f" {expected_variance(g + 1, n):>8.4f} ± {sd / np.sqrt(k):.3f} |"
                     f" {sim[g]:>8.4f} ± {sd / np.sqrt(CHAINS):.3f} |")
        if gmm:
            line += (f" {mean['fit_rare_mass']:>14.4f} | {mean['fit_min_weight']:>10.4f} |"
                     f" {mean['fit_rare_nll']:>+13.3f} | {mean['fit_bulk_nll']:>+13.3f} |")
        else:
            line += f" {mean['fit_tail_mass']:>17.4f} |"
        line += (f" {np.median([r.quality for r in rows]):>16.3f} | {np.mean([r.val_loss for r in rows]):>8.3f} |"
                 f" {np.mean([r.health for r in rows]):>6.2f} | {alert_summary(rows)}")
        print(line)
    firsts = [(first(run), first(run, "critical"), first(run, None, "tail_mass"), first(run, None, "total_variance"),
               first(run, None, "gold_nll")) for run in runs]
    fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
    print("  first alert per seed (any / critical / tail_mass / total_variance / gold_nll): "
          + "; ".join("/".join(fmt(v) for v in f) for f in firsts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("both", "gaussian", "gmm"), default="both")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per regime (default 3)")
    parser.add_argument("--generations", type=int, default=None,
                        help=f"refits after generation 0 (default {DEFAULT_GENERATIONS})")
    parser.add_argument("--n", type=int, default=None, help=f"training samples per generation (default {DEFAULT_N})")
    parser.add_argument("--every", type=int, default=None, help="print every k-th generation (default: about 10 rows)")
    parser.add_argument("--thresholds", default="balanced", help="thresholds preset (default balanced)")
    args = parser.parse_args()
    scenarios = ("gaussian", "gmm") if args.scenario == "both" else (args.scenario,)
    for scenario in scenarios:
        n = args.n or DEFAULT_N[scenario]
        generations = DEFAULT_GENERATIONS[scenario] if args.generations is None else args.generations
        every = args.every or max(1, generations // 10)
        sim = simulate_variance_chains(n, generations, chains=CHAINS, seed=0) if scenario == "gaussian" else None
        truth = ("N(0, 1)" if scenario == "gaussian" else
                 f"GMM weights {TRUE_GMM.weights} at {TRUE_GMM.means}; rare mode = x > {RARE_MODE_EDGE}")
        print(f"\n=== {scenario}: truth {truth}; n={n} per generation, {generations} generations, "
              f"{args.seeds} seed(s), thresholds {args.thresholds!r}")
        for regime in REGIMES:
            start = time.perf_counter()
            runs = [run_scenario(scenario, regime, seed, generations, n=n, thresholds=args.thresholds)
                    for seed in range(args.seeds)]
            print(f"\n-- {regime} ({time.perf_counter() - start:.1f} s)")
            table(scenario, regime, runs, n, every, sim)


if __name__ == "__main__":
    main()
