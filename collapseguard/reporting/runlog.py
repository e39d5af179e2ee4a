"""Read what a training run logged, whichever tools logged it.

A run folder may hold the guard's JSONL trail (``alert_log=``), Lightning's
``CSVLogger`` files (``metrics.csv``), the Hugging Face Trainer's
``trainer_state.json`` and TensorBoard event files. :func:`read_run` finds them
all and returns one :class:`RunLog` per run: metric series by step, and from a
trail the gold references, bounds, alerts, halts and configuration.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapseguard.reporting.alertlog import read_alert_log

PREFIX = "collapseguard/"
_TRAIL_TYPES = {"config", "baseline", "check", "alert", "halt", "last_good"}
# framework keys shown beside the guard's metrics (training and validation loss)
LOSS_KEYS = ("loss", "train_loss", "val_loss", "eval_loss", "train_loss_epoch", "train_loss_step")


@dataclass
class RunLog:
    """Everything one run logged.

    Attributes:
        name: the run's folder, relative to the folder read.
        series: metric name -> list of (step, value), sorted by step. Guard metrics drop the
            ``collapseguard/`` prefix (``health``, ``distinct_2``); framework losses keep their names.
        checks: the trail's check records (with ``reference``, ``bounds``, ``phase_health``).
        alerts: the trail's alert records (phase, severity, metric, value, message, step).
        halts: the trail's halt records.
        config: the latest config record of the trail (gold set, thresholds, settings).
        last_good: where to roll back to: the step with the best health, its health and checkpoint folder.
        sources: which files were read.
        notes: what could not be read, and why.
    """

    name: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    sentinel_checks: list[dict[str, Any]] = field(default_factory=list)  # the step schedule's cheap tier
    alerts: list[dict[str, Any]] = field(default_factory=list)
    halts: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    from_trail: set[str] = field(default_factory=set)
    last_good: dict[str, Any] | None = None  # the trail's last good checkpoint: step, health, checkpoint folder

    def add(self, name: str, step: float, value: Any, *, trail: bool = False) -> None:
        """Add one point; a metric the trail holds is taken from the trail only (frameworks log it at
        their own step counter, which can be one off)."""
        if trail:
            self.from_trail.add(name)
        elif name in self.from_trail:
            return
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if math.isfinite(v):
            self.series.setdefault(name, []).append((float(step), v))

    def finish(self) -> RunLog:
        """Sort each series by step; a step logged by two sources keeps one value."""
        for key, points in self.series.items():
            self.series[key] = sorted(dict(points).items())
        return self

    @property
    def guard_metrics(self) -> list[str]:
        return sorted(k for k in self.series if k not in LOSS_KEYS)


def _metric_name(key: str) -> str | None:
    """The series name of a logged key, or None for keys the report does not show.

    The HF Trainer's TensorBoard callback prefixes tags with ``train/`` and ``eval/``; its evaluation
    logs repeat the last check as ``eval_collapseguard/*``, which is skipped (not a new check).
    """
    if key.startswith("eval/"):
        key = "eval_" + key[len("eval/"):]
    elif key.startswith(("train/", "test/")):
        key = key.split("/", 1)[1]
    if key.startswith(PREFIX):
        return key[len(PREFIX):]
    return key if key in LOSS_KEYS else None


def _is_trail(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and first.get("type") in _TRAIL_TYPES


def read_trail(path: str | Path, run: RunLog) -> None:
    """Fold a guard trail into ``run`` (checks on rank 0 carry the merged verdict)."""
    for rec in read_alert_log(path):
        kind, step = rec.get("type"), rec.get("step")
        step = step if step is not None else len(run.checks)
        if kind == "config":
            run.config = rec
        elif kind == "check":
            # a sentinel check (the cheap model-side tier) is its own series: "sentinel/gold_ppl", ...
            tier = "sentinel/" if rec.get("tier") == "sentinel" else ""
            (run.sentinel_checks if tier else run.checks).append(rec)
            run.add(f"{tier}health", step, rec.get("health"), trail=True)
            for key, value in (rec.get("metrics") or {}).items():
                run.add(f"{tier}{key}", step, value, trail=True)
            for key, value in (rec.get("log_metrics") or {}).items():
                name = _metric_name(key)
                if name and name not in LOSS_KEYS:
                    run.add(name, step, value, trail=True)
        elif kind == "baseline":  # the model before training: the plots' starting point, never judged
            tier = "sentinel/" if rec.get("tier") == "sentinel" else ""
            for key, value in (rec.get("metrics") or {}).items():
                run.add(f"{tier}{key}", step, value, trail=True)
        elif kind == "alert":
            run.alerts.append(rec)
        elif kind == "halt":
            run.halts.append(rec)
        if kind in ("check", "halt", "last_good") and rec.get("tier", "full") == "full":
            good = rec if kind == "last_good" else rec.get("last_good")
            if good:  # the latest word on where to roll back to (a checkpoint folder arrives after its check)
                run.last_good = {k: good.get(k) for k in ("step", "health", "checkpoint")}
    run.sources.append(str(path))


def read_lightning_csv(path: str | Path, run: RunLog) -> None:
    """Fold a Lightning ``CSVLogger`` ``metrics.csv`` into ``run``."""
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                name = _metric_name(key or "")
                if name and value not in (None, ""):
                    run.add(name, float(step), value)
    run.sources.append(str(path))


def read_trainer_state(path: str | Path, run: RunLog) -> None:
    """Fold a Hugging Face ``trainer_state.json`` (its ``log_history``) into ``run``."""
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    for entry in state.get("log_history", []):
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            name = _metric_name(key)
            if name:
                run.add(name, step, value)
    run.sources.append(str(path))


def read_tensorboard(path: str | Path, run: RunLog) -> None:
    """Fold a TensorBoard event file into ``run`` (needs the ``tensorboard`` package)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        run.notes.append(f"{path}: TensorBoard events skipped; reading them needs `pip install tensorboard`")
        return
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags().get("scalars", []):
        name = _metric_name(tag)
        if name:
            for event in acc.Scalars(tag):
                run.add(name, event.step, event.value)
    run.sources.append(str(path))


def read_run(folder: str | Path) -> list[RunLog]:
    """Every run under ``folder``: one per folder holding a trail or framework logs.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it holds nothing this module can read (the message lists what is looked for).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {str(root)!r} does not exist")
    found: dict[Path, list[tuple[str, Path]]] = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".jsonl" and _is_trail(path):
            found[path.parent].append(("trail", path))
        elif path.name == "metrics.csv":
            found[path.parent].append(("csv", path))
        elif path.name == "trainer_state.json" and "checkpoint-" not in str(path.parent.name):
            found[path.parent].append(("hf", path))
        elif path.name.startswith("events.out.tfevents"):
            found[path.parent].append(("tb", path))
    if not any(k == "hf" for files in found.values() for k, _ in files):  # fall back to the last checkpoint's state
        states = sorted((p for p in root.rglob("checkpoint-*/trainer_state.json")
                         if p.parent.name.split("-")[-1].isdigit()), key=lambda p: int(p.parent.name.split("-")[-1]))
        if states:
            found[states[-1].parent.parent].append(("hf", states[-1]))
    if not found:
        raise ValueError(f"no run logs under {str(root)!r}: looked for the guard's JSONL trail (alert_log=...), "
                         "Lightning's metrics.csv, the HF Trainer's trainer_state.json and TensorBoard event files")
    readers = {"trail": read_trail, "csv": read_lightning_csv, "hf": read_trainer_state, "tb": read_tensorboard}
    # framework logs below a folder that holds a trail belong to that trail's run
    # (e.g. alerts.jsonl next to lightning_logs/version_0/metrics.csv)
    trail_dirs = {d for d, files in found.items() if any(k == "trail" for k, _ in files)}
    grouped: dict[Path, list[tuple[str, Path]]] = defaultdict(list)
    for folder_path, files in found.items():
        owner = next((d for d in (folder_path, *folder_path.parents) if d in trail_dirs), folder_path)
        grouped[owner].extend(files)
    found = grouped
    runs = []
    for folder_path in sorted(found):
        rel = folder_path.relative_to(root)
        run = RunLog(name=str(rel) if str(rel) != "." else root.name)
        for kind, path in sorted(found[folder_path], key=lambda kp: kp[0] != "trail"):  # trails first
            try:
                readers[kind](path, run)
            except (OSError, ValueError, KeyError) as exc:
                run.notes.append(f"{path}: not read ({type(exc).__name__}: {exc})")
        runs.append(run.finish())
    return runs
