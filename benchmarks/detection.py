"""Detection benchmark: does the guard see model collapse coming, and does it keep quiet on the controls?

For each scenario and regime, over seeds, from the :class:`~collapseguard.demos.experiment.GenerationRecord` of
every generation (framework-free; any scenario that reports records works):

- **detected**: the guard raised an alert (warn or critical; ``fault`` alerts -- a check that could not
  run -- are not detections) at some generation >= 1;
- **first warn / first critical**: the first generation >= 1 with an alert of at least that severity;
- **degradation**: the ground truth -- the first generation whose ``quality`` (held-out human perplexity,
  lower is better) is at least ``1.10 x`` that of generation 0;
- **lead time** = degradation generation - first-alert generation (positive: the guard was early). When
  the run does not degrade within the horizon of ``G`` generations the lead time is censored and reported
  as the lower bound ``(G + 1) - first alert`` (``>= k`` in the tables);
- **false alerts**: on the controls (``fresh``, ``accumulate``), the count of warn and of critical alerts
  at generations >= 1;
- **baseline**: Lightning's own ``EarlyStopping(monitor="val_loss", mode="min", patience=1)`` fed the
  per-generation ``val_loss`` (held-out data drawn like that generation's training data) through its real
  decision method ``_evaluate_stopping_criteria``: the generation at which it would have stopped; also
  fed from generation 1 on (generation 0's val_loss is on human data, later ones on each generation's own
  training distribution, so the gen 0 -> 1 step compares different data).

Run it (writes ``detection_<scenario>.json`` and ``.md`` to ``--out``)::

    python benchmarks/detection.py --scenario text --seeds 10 --generations 5 --out benchmarks/results
    python benchmarks/detection.py --scenario text --smoke --out /tmp/det      # CI size: seconds, not minutes

Scenarios are a registry (:data:`SCENARIOS`): ``{name: callable(regime, seed, generations, **size)}`` with
their sizes in :data:`SIZES`; add one with :func:`register`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.reporting.alertlog import json_safe as jsonable

DEGRADATION_FACTOR = 1.10
"""A generation has degraded once its quality is this many times generation 0's (10% worse perplexity)."""
LATE_FACTOR = 1.5
"""The late phase (functional collapse) has begun once quality is this many times generation 0's."""
CONTROLS = ("fresh", "accumulate")
"""Regimes that should not collapse: every alert on them is a false alert."""
SEVERITY_RANK = {"warn": 1, "critical": 2}

Runner = Callable[..., list[GenerationRecord]]


# ------------------------------------------------------------------------------------------------ summaries
def _collapse_alerts(record: GenerationRecord) -> list[dict[str, Any]]:
    # a fault says the check could not run, not that the model collapsed
    return [a for a in record.alerts if a.get("phase") != "fault" and a.get("severity") in SEVERITY_RANK]


def _ordered(records: Iterable[GenerationRecord]) -> list[GenerationRecord]:
    return sorted(records, key=lambda r: r.generation)


def first_alert(records: Iterable[GenerationRecord], severity: str = "warn") -> int | None:
    """The first generation >= 1 with an alert at least as severe as ``severity``; ``None`` if none."""
    floor = SEVERITY_RANK[severity]
    for r in _ordered(records):
        if r.generation >= 1 and any(SEVERITY_RANK[a["severity"]] >= floor for a in _collapse_alerts(r)):
            return r.generation
    return None


def degradation_generation(records: Iterable[GenerationRecord], factor: float = DEGRADATION_FACTOR) -> int | None:
    """The first generation >= 1 whose quality is at least ``factor`` x generation 0's; ``None`` if none."""
    ordered = _ordered(records)
    base = next((r.quality for r in ordered if r.generation == 0), None)
    if base is None:
        raise ValueError("the records hold no generation 0: degradation is measured against it")
    for r in ordered:
        if r.generation >= 1 and r.quality / base >= factor - 1e-12:  # exactly 1.10x counts, despite rounding
            return r.generation
    return None


def early_stopping_generation(val_losses: Sequence[float], patience: int = 1, min_delta: float = 0.0) -> int | None:
    """Where ``lightning.pytorch.callbacks.EarlyStopping(monitor="val_loss", mode="min")`` would stop.

    ``val_losses[g]`` is generation ``g``'s validation loss; each is passed, in order, to the callback's own
    decision method ``_evaluate_stopping_criteria`` (what ``on_validation_end`` calls with the logged value).
    Returns the index of the first value at which it decides to stop, or ``None``. A non-finite loss
    stops it at once, as in Lightning (``check_finite=True``).
    """
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    stopper = EarlyStopping(monitor="val_loss", mode="min", patience=patience, min_delta=min_delta)
    for g, value in enumerate(val_losses):
        should_stop, _ = stopper._evaluate_stopping_criteria(torch.tensor(float(value)))
        if should_stop:
            return g
    return None


def summarize_run(records: Sequence[GenerationRecord], factor: float = DEGRADATION_FACTOR,
                  patience: int = 1) -> dict[str, Any]:
    """One run (one scenario, regime and seed; generations 0..G) in a JSON-able dict."""
    ordered = _ordered(records)
    if not ordered:
        raise ValueError("no records")
    keys = {(r.scenario, r.regime, r.seed) for r in ordered}
    if len(keys) != 1:
        raise ValueError(f"records of several runs mixed: {sorted(keys)}")
    if [r.generation for r in ordered] != list(range(len(ordered))):
        raise ValueError(f"generations must be 0..G without gaps, got {[r.generation for r in ordered]}")
    scenario, regime, seed = keys.pop()
    horizon = ordered[-1].generation
    warn, critical = first_alert(ordered, "warn"), first_alert(ordered, "critical")
    degraded = degradation_generation(ordered, factor)
    late = degradation_generation(ordered, LATE_FACTOR)
    lead, censored = None, False
    if warn is not None:
        censored = degraded is None
        lead = (horizon + 1 if censored else degraded) - warn
    later = [a for r in ordered if r.generation >= 1 for a in _collapse_alerts(r)]
    base = ordered[0].quality
    return {
        "scenario": scenario, "regime": regime, "seed": seed, "generations": horizon,
        "control": regime in CONTROLS,
        "detected": warn is not None, "first_warn": warn, "first_critical": critical,
        "degradation": degraded, "lead_time": lead, "lead_time_censored": censored, "late_phase": late,
        # flagged before the late phase: a warn at a generation before quality reached LATE_FACTOR x gen 0
        "flagged_before_late": warn is not None and (late is None or warn < late),
        "early_stopping": early_stopping_generation([r.val_loss for r in ordered], patience=patience),
        # the same fed from generation 1 on: generation 0's val_loss is on human data, later ones on data drawn
        # like each generation's training data, so this variant compares like with like
        "early_stopping_from_1": _shift(early_stopping_generation([r.val_loss for r in ordered[1:]],
                                                                  patience=patience)),
        "warn_alerts": sum(a["severity"] == "warn" for a in later),
        "critical_alerts": sum(a["severity"] == "critical" for a in later),
        "alerted_generations": sum(bool(_collapse_alerts(r)) for r in ordered if r.generation >= 1),
        "quality_ratio": [r.quality / base for r in ordered],
        "val_loss": [r.val_loss for r in ordered],
    }


def _shift(index: int | None) -> int | None:
    return None if index is None else index + 1


def group_runs(records: Iterable[GenerationRecord]) -> dict[tuple[str, str, int], list[GenerationRecord]]:
    """Records grouped by run: ``(scenario, regime, seed) -> records``, in first-seen order."""
    runs: dict[tuple[str, str, int], list[GenerationRecord]] = {}
    for r in records:
        runs.setdefault((r.scenario, r.regime, r.seed), []).append(r)
    return runs


def _spread(values: Sequence[int | None]) -> dict[str, Any]:
    seen = [v for v in values if v is not None]
    return {"values": list(values), "n": len(seen), "never": len(values) - len(seen),
            "median": statistics.median(seen) if seen else None,
            "min": min(seen) if seen else None, "max": max(seen) if seen else None}


def summarize(records: Iterable[GenerationRecord], factor: float = DEGRADATION_FACTOR,
              patience: int = 1) -> dict[str, Any]:
    """Per-run summaries and, per scenario x regime over seeds, their aggregate: a JSON-able dict."""
    runs = [summarize_run(rs, factor, patience) for rs in group_runs(records).values()]
    table = []
    for scenario, regime in dict.fromkeys((r["scenario"], r["regime"]) for r in runs):
        mine = sorted((r for r in runs if r["scenario"] == scenario and r["regime"] == regime),
                      key=lambda r: r["seed"])
        table.append({
            "scenario": scenario, "regime": regime, "control": regime in CONTROLS, "seeds": len(mine),
            "generations": max(r["generations"] for r in mine),
            "detected": sum(r["detected"] for r in mine),
            "first_warn": _spread([r["first_warn"] for r in mine]),
            "first_critical": _spread([r["first_critical"] for r in mine]),
            "degradation": _spread([r["degradation"] for r in mine]),
            "lead_time": _spread([r["lead_time"] for r in mine]),
            "lead_time_censored": sum(r["lead_time_censored"] for r in mine),
            "late_phase": _spread([r["late_phase"] for r in mine]),
            "flagged_before_late": sum(r["flagged_before_late"] for r in mine),
            "early_stopping": _spread([r["early_stopping"] for r in mine]),
            "early_stopping_from_1": _spread([r["early_stopping_from_1"] for r in mine]),
            "warn_alerts": sum(r["warn_alerts"] for r in mine),
            "critical_alerts": sum(r["critical_alerts"] for r in mine),
            "alerted_generations": sum(r["alerted_generations"] for r in mine),
            "final_quality_ratio": _spread([round(r["quality_ratio"][-1], 4) for r in mine]),
        })
    return {"degradation_factor": factor, "early_stopping_patience": patience, "runs": runs, "table": table}


def _cell(spread: dict[str, Any], horizon: int) -> str:
    if spread["n"] == 0:
        return f"never in {horizon}"
    lo, hi, med = spread["min"], spread["max"], spread["median"]
    text = f"{med:g}" if lo == hi else f"{med:g} ({lo:g}–{hi:g})"
    return text + (f"; never in {spread['never']}" if spread["never"] else "")


def _series(values: Sequence[float], fmt: str, most: int = 11) -> str:
    """Values per generation; long runs show every k-th generation (labelled) and the last."""
    if len(values) <= most:
        return " ".join(fmt.format(v) for v in values)
    step = math.ceil((len(values) - 1) / (most - 1))
    keep = sorted({*range(0, len(values), step), len(values) - 1})
    return " ".join(f"g{g}:" + fmt.format(values[g]) for g in keep)


def _gen(value: int | None) -> str:
    return "never" if value is None else str(value)


def markdown(summary: dict[str, Any]) -> str:
    """The aggregate table and a per-seed table, in Markdown."""
    factor = summary["degradation_factor"]
    lines = [
        "| scenario | regime | seeds | detected | first warn | first critical | degradation (quality ≥ "
        f"{factor:g}× gen 0) | lead time (gens) | late phase (quality ≥ {LATE_FACTOR:g}×) | flagged before it | "
        "EarlyStopping stops at | EarlyStopping from gen 1 | warn / critical alerts | final quality × gen 0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["table"]:
        g = row["generations"]
        lead = _cell(row["lead_time"], g) if row["lead_time"]["n"] else "– (no alert)"
        if row["lead_time_censored"]:
            lead += f" ({row['lead_time_censored']} lower bounds: no degradation in {g})"
        alerts = f"{row['warn_alerts']} / {row['critical_alerts']}" + (" (false)" if row["control"] else "")
        fq = row["final_quality_ratio"]
        lines.append(
            f"| {row['scenario']} | {row['regime']}{' (control)' if row['control'] else ''} | {row['seeds']} | "
            f"{row['detected']}/{row['seeds']} | {_cell(row['first_warn'], g)} | {_cell(row['first_critical'], g)} "
            f"| {_cell(row['degradation'], g)} | {lead} | {_cell(row['late_phase'], g)} | "
            f"{'–' if row['control'] else str(row['flagged_before_late']) + '/' + str(row['seeds'])} | "
            f"{_cell(row['early_stopping'], g)} | "
            f"{_cell(row['early_stopping_from_1'], g)} | {alerts} | "
            f"{fq['median']:.2f} ({fq['min']:.2f}–{fq['max']:.2f}) |")
    lines += ["", "Median (min–max) over seeds; \"never in k\": seeds without the event in k generations. Lead time "
              "= degradation generation − first-warn generation (positive: the guard warned first). EarlyStopping: "
              "Lightning's `EarlyStopping(monitor=\"val_loss\", mode=\"min\", patience="
              f"{summary['early_stopping_patience']})` fed the val_loss of generations 0..G (from gen 1: of 1..G, "
              "all on data drawn like that generation's training data). Faults are not counted as alerts.", "",
              "| scenario | regime | seed | first warn | first critical | degradation | lead time | "
              "EarlyStopping | from gen 1 | warn / critical alerts | quality × gen 0 per generation | "
              "val_loss per generation |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lead = "-" if r["lead_time"] is None else ("≥ " if r["lead_time_censored"] else "") + str(r["lead_time"])
        lines.append(
            f"| {r['scenario']} | {r['regime']} | {r['seed']} | {_gen(r['first_warn'])} | "
            f"{_gen(r['first_critical'])} | {_gen(r['degradation'])} | {lead} | "
            f"{_gen(r['early_stopping'])} | {_gen(r['early_stopping_from_1'])} | {r['warn_alerts']} / {r['critical_alerts']} | "
            + _series(r["quality_ratio"], "{:.2f}") + " | " + _series(r["val_loss"], "{:.3f}") + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ scenarios
def _text(regime: str, seed: int, generations: int, **size: Any) -> list[GenerationRecord]:
    from collapseguard.demos.recursive_text import run_text

    return run_text(regime, seed, generations, **size)


def _gaussian(regime: str, seed: int, generations: int, **size: Any) -> list[GenerationRecord]:
    from collapseguard.demos.recursion import run_gaussian

    return run_gaussian(regime, seed, generations, **size)


def _gmm(regime: str, seed: int, generations: int, **size: Any) -> list[GenerationRecord]:
    from collapseguard.demos.recursion import run_gmm

    return run_gmm(regime, seed, generations, **size)


def _vae(regime: str, seed: int, generations: int, **size: Any) -> list[GenerationRecord]:
    from collapseguard.demos.recursive_images import run_vae

    return run_vae(regime, seed, generations, **size)


SCENARIOS: dict[str, Runner] = {"gaussian": _gaussian, "gmm": _gmm, "vae": _vae, "text": _text}
"""``{name: callable(regime, seed, generations, **size) -> records}``; ``--scenario`` picks one."""
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    # n = 300 / 500 samples per refit: below ~200 the controls' tail_mass is noisy enough for false criticals
    "gaussian": {"full": {}, "smoke": {"check_size": 500, "test_size": 1000, "val_size": 500}},
    "gmm": {"full": {}, "smoke": {"check_size": 500, "test_size": 1000, "val_size": 500}},
    # 800 images x 70 epochs = 437 Adam steps per generation (below ~400 the VAE is undertrained and
    # the controls degrade too); the guard judges against generation 0's check (reference="gen0")
    "vae": {"full": {"epochs": 70}, "smoke": {"samples": 400, "epochs": 60, "check_size": 200}},
    "text": {
        # ~2.5 s of one CPU core per generation (sampling 250+41 texts, 2 epochs, one guard check, two evals)
        "full": {},
        "smoke": {"samples": 40, "epochs": 1, "gen0_epochs": 1, "num_samples": 16, "val_samples": 10},
    },
}
"""Per scenario, the keyword arguments of its runner at ``full`` and ``--smoke`` size."""


def register(name: str, runner: Runner, full: dict[str, Any] | None = None,
             smoke: dict[str, Any] | None = None) -> None:
    """Add a scenario: ``runner(regime, seed, generations, **size)`` returning GenerationRecords."""
    SCENARIOS[name] = runner
    SIZES[name] = {"full": dict(full or {}), "smoke": dict(smoke or {})}


def run_scenario(name: str, seeds: Iterable[int], generations: int, regimes: Sequence[str] = REGIMES, *,
                 smoke: bool = False, log: Callable[[str], None] | None = None,
                 **overrides: Any) -> tuple[list[GenerationRecord], dict[str, float]]:
    """Every seed x regime of one scenario; returns the records and the wall seconds of each run."""
    runner, size = SCENARIOS[name], {**SIZES.get(name, {}).get("smoke" if smoke else "full", {}), **overrides}
    records: list[GenerationRecord] = []
    seconds: dict[str, float] = {}
    for seed in seeds:  # seed outermost: a runner may share its generation 0 across regimes
        for regime in regimes:
            start = time.perf_counter()
            records += runner(regime, seed, generations, **size)
            seconds[f"{regime}/{seed}"] = time.perf_counter() - start
            if log:
                log(f"{name} {regime} seed {seed}: {seconds[f'{regime}/{seed}']:.1f} s")
    return records, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="text", choices=sorted(SCENARIOS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 10; --smoke: 1)")
    parser.add_argument("--generations", type=int, default=None, help="generations after 0 (default 5; --smoke: 2)")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--thresholds", default=None, help="guard preset (default: the runner's, balanced)")
    parser.add_argument("--smoke", action="store_true", help="CI size: tiny models, 1 seed, 2 generations")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core box more threads only wait)")
    parser.add_argument("--no-records", action="store_true",
                        help="leave the per-generation records out of the JSON (long runs: the summaries stay)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (1 if args.smoke else 10)
    generations = args.generations if args.generations is not None else (2 if args.smoke else 5)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # array scenarios need no torch
        pass
    overrides = {"thresholds": args.thresholds} if args.thresholds else {}
    started, cpu = time.perf_counter(), time.process_time()
    records, seconds = run_scenario(args.scenario, range(seeds), generations, args.regimes.split(","),
                                    smoke=args.smoke, log=lambda m: print(m, file=sys.stderr, flush=True),
                                    **overrides)
    summary = summarize(records)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stem = f"detection_{args.scenario}" + (f"-{args.thresholds}" if args.thresholds else "")
    command = "python benchmarks/detection.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "scenario": args.scenario, "seeds": seeds, "generations": generations,
            "smoke": args.smoke, "thresholds": args.thresholds or "runner default", "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "threads": args.threads, "python": platform.python_version(),
            "run_wall_s": {k: round(v, 2) for k, v in seconds.items()}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(
        jsonable({"meta": meta, **summary, **({} if args.no_records else {"records": [r.to_dict() for r in records]})}),
        indent=1, allow_nan=False))
    text = markdown(summary)
    (out / f"{stem}.md").write_text(
        f"Detection benchmark, scenario `{args.scenario}`: {seeds} seeds × {generations} generations; "
        f"`{command}`; {wall:.0f} s wall, {cpu:.0f} s CPU.\n\n{text}")
    print(text)
    print(f"wrote {out / stem}.json and .md ({wall:.0f} s wall, {cpu:.0f} s CPU)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
