"""The engine both training callbacks drive: schedule, fault handling, halting, state.

The adapters (``collapseguard.integrations.*``) only translate framework hooks:
they hand the engine a ``produce`` function that asks the model to continue
the gold prompts, and act on what the engine decides. Everything else -- which
prompts, measuring, merging ranks, judging, when to halt, what to save -- is
here, so both frameworks behave identically for the same outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from collapseguard.detection.alerts import Alert, emit, logger
from collapseguard.detection.monitor import CheckResult, CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet, GoldSetModifiedError
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.metrics import ModelStats
from collapseguard.metrics.suite import MetricSuite
from collapseguard.reporting.alertlog import AlertLog

ENGINE_STATE_VERSION = 1
BASELINE_SEED_OFFSET = 1_000_003  # the check before training samples from seed + this
ON_COLLAPSE = ("warn", "halt", "reweight")
ON_ERROR = ("warn", "raise")
DEFAULT_GENERATION = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


class UnrecoverableCheckError(RuntimeError):
    """A check failed where the processes can no longer agree: one rank failed inside a collective
    (a forward of a sharded model) that the others are still waiting in. Never turned into a
    fault, whatever ``on_error``: the process stops, so the launcher can end the others."""


@dataclass
class Generation:
    """What an adapter's ``produce`` returns for its shard of prompts.

    Text gold: ``sequences`` (generated token ids, EOS excluded) and ``finished``
    (True where the model emitted EOS), optionally ``model_stats``. Array gold: ``samples`` (n, d),
    optionally ``gold_loglik`` (the model's log-likelihood of held-out gold samples).
    """

    sequences: list[np.ndarray] | None = None
    finished: list[bool] | None = None
    samples: np.ndarray | None = None
    model_stats: ModelStats | None = None
    gold_loglik: np.ndarray | None = None
    reported: dict[str, list[float]] | None = None  # statistics a trainer reports (guard without gold)


@dataclass
class CheckOutcome:
    """The engine's verdict on one check, for the adapter to act on."""

    result: CheckResult | None
    should_stop: bool
    reason: str | None
    log_metrics: dict[str, float] = field(default_factory=dict)
    faults: list[Alert] = field(default_factory=list)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def _choice(name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name}={value!r} is not supported: choose one of {list(options)}")
    return value


class GuardEngine:
    """Configuration, schedule and decisions of a collapse guard (framework-free).

    Args:
        gold: the human gold set.
        tokenizer: tokenizer for a text gold set; adapters may supply it later via :meth:`setup`.
        thresholds: :class:`Thresholds`, preset name or dict.
        on_collapse: ``"warn"`` (log and warn only), ``"halt"`` (stop training after
            ``patience`` consecutive critical checks) or ``"reweight"`` (raise the human share of an
            :class:`~collapseguard.guard.sampling.AnchorMixSampler` as alerts grow, relax it as health recovers).
        sampler: the ``AnchorMixSampler`` that ``on_collapse="reweight"`` steers; its starting
            ``min_human_fraction`` is the floor it never goes below.
        max_human_fraction, reweight_step: the ceiling of the human share and its step per check
            (a warn raises it one step, a critical two; ``recovery_checks`` clean checks lower it one).
        provenance: a :class:`~collapseguard.gold.provenance.ProvenanceLedger` whose summary (samples and
            tokens by label) is logged when training starts.
        data_monitor: a :class:`~collapseguard.detection.datastream.DataStreamMonitor` fed with the training
            batches; judged at every check (its alerts are logged and trailed, never halt training).
        on_error: ``"warn"`` (a failing check becomes a fault alert, training goes on) or ``"raise"``.
        every_n_epochs: run a check at the end of every n-th epoch.
        num_samples: gold prompts continued per check (across all processes).
        prompt_length: gold tokens in each prompt.
        max_new_tokens: tokens generated per prompt (also the gold reference length).
        patience: consecutive critical checks before halting.
        seed: generation seed; check k uses ``seed + k``, so resumed runs sample the same way.
        generation_kwargs: overrides of the sampling settings (default: pure sampling, temperature 1).
        model_stats: also score gold continuations teacher-forced (banded perplexity, entropy).
        batch_size: prompts per generation batch.
        zero3_gather: DeepSpeed ZeRO-3 only: gather the whole model once for a check (fast, and a rank
            failing while generating is a fault; needs the full parameters' memory on each device), or
            ``False``: fetch them module by module as training does (every forward a collective).
        reference: a :class:`~collapseguard.gold.profiles.ReferenceProfile` or the path of its JSON: judge
            every check against this trusted model as well.
        save_profile: write a reference profile of the final model to this path at the end of training.
        alert_log: append a JSONL trail here (one line per check and per alert; written by rank 0).
        check_on_train_start: measure the model once before training starts (same prompts and settings, not
            judged): the run's starting point, so that a model which gets worse than where it started is
            judged against it from the first check (see :mod:`collapseguard.detection.trajectory`). Skipped on resume.
        samples_per_prompt: continue each gold prompt k times (groups kept together when prompts are shared out
            across ranks): within-prompt diversity is measured on the groups, the metrics across prompts on
            each group's first sample (see :class:`~collapseguard.detection.monitor.CollapseMonitor`).

    ``gold=None`` is for guards that judge what the trainer generated itself (the GRPO guard): no prompts, groups
    of ``samples_per_prompt`` samples and trainer-reported statistics, judged against the run's own start.

    Raises:
        TypeError / ValueError: naming the argument, its value and the valid choices.
    """

    def __init__(self, gold: GoldSet, *, tokenizer: Any = None, thresholds: Thresholds | str | dict | None = None,
                 on_collapse: Literal["warn", "halt"] = "warn", on_error: Literal["warn", "raise"] = "warn",
                 every_n_epochs: int = 1, num_samples: int = 64, prompt_length: int = 16, max_new_tokens: int = 32,
                 patience: int = 1, seed: int = 0, generation_kwargs: dict[str, Any] | None = None,
                 model_stats: bool = True, batch_size: int = 32, zero3_gather: bool = True,
                 reference: ReferenceProfile | str | Path | None = None, save_profile: str | Path | None = None,
                 alert_log: str | Path | None = None, sampler: Any = None, max_human_fraction: float = 0.8,
                 reweight_step: float = 0.1, recovery_checks: int = 2, provenance: Any = None,
                 data_monitor: Any = None, check_on_train_start: bool = True, samples_per_prompt: int = 1) -> None:
        if gold is not None and not isinstance(gold, GoldSet):
            raise TypeError(f"gold must be a GoldSet (GoldSet.from_texts / from_jsonl / from_arrays), got {type(gold).__name__}")
        self.gold = gold
        self.tokenizer = tokenizer
        self.thresholds = Thresholds.coerce(thresholds)
        self.on_collapse = _choice("on_collapse", on_collapse, ON_COLLAPSE)
        self.on_error = _choice("on_error", on_error, ON_ERROR)
        self.every_n_epochs = _positive_int("every_n_epochs", every_n_epochs)
        self.num_samples = _positive_int("num_samples", num_samples, 2)
        self.prompt_length = _positive_int("prompt_length", prompt_length)
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.patience = _positive_int("patience", patience)
        self.seed = _positive_int("seed", seed, 0)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.samples_per_prompt = _positive_int("samples_per_prompt", samples_per_prompt)
        if gold is not None and gold.kind == "array" and self.samples_per_prompt > 1:
            raise ValueError("samples_per_prompt > 1 needs prompts: an array gold set has none; drop samples_per_prompt")
        if generation_kwargs is not None and not isinstance(generation_kwargs, dict):
            raise TypeError(f"generation_kwargs must be a dict, got {type(generation_kwargs).__name__}")
        self.generation_kwargs = {**DEFAULT_GENERATION, **(generation_kwargs or {})}
        self.model_stats = bool(model_stats)
        self.zero3_gather = bool(zero3_gather)
        self.reference = ReferenceProfile.coerce(reference)
        if self.reference is not None:  # the tokenizer part is checked at setup, once it is known
            if gold is None:
                raise ValueError("reference= is judged on gold prompts: pass a GoldSet, or drop reference")
            self.reference.require_compatible(gold.fingerprint, self.settings())
        if save_profile is not None and not isinstance(save_profile, str | Path):
            raise TypeError(f"save_profile must be a file path, got {type(save_profile).__name__}")
        self.save_profile = Path(save_profile) if save_profile is not None else None
        if alert_log is not None and not isinstance(alert_log, str | Path):
            raise TypeError(f"alert_log must be a file path, got {type(alert_log).__name__}")
        self.alert_log = AlertLog(alert_log, raise_errors=self.on_error == "raise") if alert_log is not None else None
        self.rank, self.world_size = 0, 1
        self.sampler = sampler
        if self.on_collapse == "reweight":
            if sampler is None or not callable(getattr(sampler, "set_human_fraction", None)):
                raise ValueError("on_collapse='reweight' needs sampler=AnchorMixSampler(...) (the sampler of your "
                                 "training DataLoader), whose human share it raises as alerts grow")
            self.human_floor = float(sampler.min_human_fraction)
            for name, value in (("max_human_fraction", max_human_fraction), ("reweight_step", reweight_step)):
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                    raise ValueError(f"{name}={value!r} must be a fraction in (0, 1]")
            if max_human_fraction < self.human_floor:
                raise ValueError(f"max_human_fraction={max_human_fraction} is below the sampler's min_human_fraction="
                                 f"{self.human_floor}: raise max_human_fraction")
            self.human_fraction: float | None = self.human_floor
        else:
            self.human_floor, self.human_fraction = 0.0, None
        self.max_human_fraction = float(max_human_fraction)
        self.reweight_step = float(reweight_step)
        self.recovery_checks = _positive_int("recovery_checks", recovery_checks)
        self.clean_streak = 0
        if provenance is not None and not callable(getattr(provenance, "log_summary", None)):
            raise TypeError(f"provenance must be a ProvenanceLedger, got {type(provenance).__name__}")
        self.provenance = provenance
        if data_monitor is not None and not callable(getattr(data_monitor, "evaluate", None)):
            raise TypeError(f"data_monitor must be a DataStreamMonitor, got {type(data_monitor).__name__}")
        if data_monitor is not None and (gold is None or gold.kind != "text"):
            raise ValueError("data_monitor watches token streams: it needs a text gold set")
        self.data_monitor = data_monitor
        if not isinstance(check_on_train_start, bool):
            raise TypeError(f"check_on_train_start must be True or False, got {check_on_train_start!r}")
        self.check_on_train_start = check_on_train_start
        self._baseline_running = False
        self._data_alerts: set[tuple[str, str]] = set()
        self.monitor: CollapseMonitor | None = None
        self.checks_done = 0
        self.critical_streak = 0
        self.last_outcome: CheckOutcome | None = None
        self._pending_state: dict[str, Any] | None = None
        self.timing: dict[str, float] = {}  # seconds spent in the last check, by part
        self.timing_history: list[dict[str, float]] = []  # one per successful check of this process
        self.last_step: int | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, tokenizer: Any = None, *, rank: int = 0, world_size: int = 1) -> None:
        """Build the monitor (tokenizes and splits gold once) and note this process's rank. Idempotent."""
        self.rank, self.world_size = rank, world_size
        if self.monitor is not None:
            return
        if self.provenance is not None and rank == 0:
            self.provenance.log_summary()
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if self.gold is not None and self.gold.kind == "text" and tokenizer is None:
            raise ValueError("a text gold set needs the model's tokenizer: pass tokenizer=... to the callback")
        self.tokenizer = tokenizer
        text = self.gold is None or self.gold.kind == "text"
        self.monitor = CollapseMonitor(self.gold, self.thresholds, tokenizer=tokenizer if text else None,
                                       prompt_length=self.prompt_length, max_new_tokens=self.max_new_tokens,
                                       reference=self.reference, samples_per_prompt=self.samples_per_prompt)
        # the gold reference at the check size, computed now rather than inside the first check
        self.monitor.reference(self.prompts_per_check)
        if self.prompts_per_check < self.num_samples:
            logger.warning("num_samples=%d but the gold set yields %d prompts (half of its texts long enough for "
                           "prompt_length + a continuation; the other half estimates the tail): each check uses %d",
                           self.num_samples, self.prompts_per_check, self.prompts_per_check)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
        if self.alert_log is not None and rank == 0:
            self.alert_log.write({"type": "config", **self.config()})

    def config(self) -> dict[str, Any]:
        """What a run report shows of this guard: gold set, thresholds and every setting."""
        from collapseguard import __version__

        return {
            "collapseguard": __version__, "world_size": self.world_size,
            "gold": ({"name": self.gold.name, "kind": self.gold.kind, "size": len(self.gold),
                      "fingerprint": self.gold.fingerprint} if self.gold is not None else None),
            "thresholds": self.thresholds.to_dict(),
            "guard": {"on_collapse": self.on_collapse, "on_error": self.on_error, "every_n_epochs": self.every_n_epochs,
                      "num_samples": self.num_samples, "prompts_per_check": self.prompts_per_check,
                      "samples_per_prompt": self.samples_per_prompt,
                      "prompt_length": self.prompt_length,
                      "max_new_tokens": self.max_new_tokens, "patience": self.patience, "seed": self.seed,
                      "model_stats": self.model_stats, "generation": dict(self.generation_kwargs),
                      "reference_profile": self.reference.source if self.reference is not None else None,
                      "human_floor": self.human_floor if self.human_fraction is not None else None,
                      "max_human_fraction": self.max_human_fraction if self.human_fraction is not None else None},
        }

    @property
    def prompts_per_check(self) -> int:
        """Prompts (array gold: samples) a check actually judges: ``num_samples``, or fewer when the gold set
        yields fewer prompts (half of its texts that are long enough; the other half estimates the tail)."""
        if self.monitor is None or self.gold is None or self.gold.kind != "text":
            return self.num_samples
        return min(self.num_samples, len(self.monitor.split))

    def settings(self) -> dict[str, Any]:
        """The generation settings a reference profile must share with this run."""
        out = {"num_samples": self.num_samples, "generation": dict(self.generation_kwargs),
               "model_stats": self.model_stats}
        if self.samples_per_prompt > 1:
            out["samples_per_prompt"] = self.samples_per_prompt
        return out

    def write_profile(self, source: str = "") -> Path | None:
        """Save a reference profile of the latest successful check to ``save_profile`` (if set)."""
        if self.save_profile is None:
            return None
        if self.monitor is None or not self.monitor.checks:
            logger.warning("save_profile=%s: no check ran, so no profile was written", self.save_profile)
            return None
        return self.monitor.profile(settings=self.settings(), source=source).save(self.save_profile)

    def should_check(self, epoch: int) -> bool:
        """True at the end of every ``every_n_epochs``-th epoch (``epoch`` counts from 0)."""
        return (epoch + 1) % self.every_n_epochs == 0

    def prompts(self, rank: int = 0, world_size: int = 1, *, repeat: bool = True) -> list[np.ndarray]:
        """This process's share of the gold prompts (disjoint across ranks; together ``num_samples``), each
        repeated ``samples_per_prompt`` times in a row (``repeat=False``: once), so a group never straddles ranks."""
        assert self.monitor is not None, "call setup() first"
        pool = self.monitor.split.prompts[: self.num_samples]
        share = list(pool[rank::world_size])
        k = self.samples_per_prompt if repeat else 1
        return [p for p in share for _ in range(k)]

    def gold_samples(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Held-out gold rows for a user's ``score_fn`` (array gold), sharded like the prompts."""
        return self.gold.array[: self.num_samples][rank::world_size]

    def gold_continuations(self, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """The gold continuations of :meth:`prompts`, for teacher-forced model statistics."""
        assert self.monitor is not None, "call setup() first"
        return list(self.monitor.split.continuations[: self.num_samples][rank::world_size])

    @property
    def check_seed(self) -> int:
        """The generation seed of the current check (the baseline draws from a stream of its own, so a run's
        checks sample the same way with and without it)."""
        return self.seed + (BASELINE_SEED_OFFSET if self._baseline_running else self.checks_done)

    def run_baseline(self, produce: Callable[[], Generation],
                     gather: Callable[[MetricSuite | Alert], list[MetricSuite | Alert]] = lambda local: [local], *,
                     step: int | None) -> bool:
        """Measure the model before training (``check_on_train_start``); every rank calls it, like a check.

        Recorded in the monitor's history as the run's starting point, never judged and never halting. Skipped
        when disabled or when the run already has a history (a resumed run). Returns whether it ran.
        """
        assert self.monitor is not None, "call setup() first"
        if not self.check_on_train_start or self.monitor.history:
            return False
        self._baseline_running = True
        try:
            measured = gather(self.measure(produce))
        finally:
            self._baseline_running = False
        faults = [m for m in measured if isinstance(m, Alert)]
        if faults:
            logger.warning("collapseguard: the check before training failed (%s); the run is judged without "
                           "its starting point", faults[0].message)
            return False
        merged = measured[0].copy()
        for other in measured[1:]:
            merged.merge(other)
        metrics = merged.compute()
        self.monitor.record_baseline(metrics, step=step)
        if self.alert_log is not None and self.rank == 0:
            self.alert_log.write({"type": "baseline", "step": step, "metrics": metrics})
        return True

    # ------------------------------------------------------------------ check
    def measure(self, produce: Callable[[], Generation]) -> MetricSuite | Alert:
        """Run this process's generation and measure it; a failure becomes a fault alert."""
        assert self.monitor is not None, "call setup() first"
        try:
            if self.gold is not None:
                self.gold.verify()
        except GoldSetModifiedError as exc:
            return self._fault("gold_fingerprint", f"{exc}", "critical")
        try:
            start = time.perf_counter()
            gen = produce()
            generated = time.perf_counter()
            if self.gold is not None and self.gold.kind == "array":
                if gen.samples is None or np.asarray(gen.samples).size == 0:
                    return self._fault("generation", "the model returned no samples for this check")
                suite = self.monitor.measure(gen.samples, gold_loglik=gen.gold_loglik)
            elif not gen.sequences and not (self.gold is None and gen.reported):
                return self._fault("generation", "generation returned no outputs for this check")
            else:
                too_long = 0 if self.gold is None else sum(len(seq) > self.max_new_tokens for seq in gen.sequences)
                if too_long:
                    logger.warning("%d of %d outputs on rank %d are longer than max_new_tokens=%d; they are measured "
                                   "truncated to it (check the generate_fn's length settings)", too_long,
                                   len(gen.sequences), self.rank, self.max_new_tokens)
                suite = self.monitor.measure(gen.sequences or [], finished=gen.finished, model_stats=gen.model_stats,
                                             reported=gen.reported)
            self.timing = {"generation": generated - start, "metrics": time.perf_counter() - generated}
            return suite
        except UnrecoverableCheckError:
            raise
        except Exception as exc:  # a failing check must not kill training unless asked to
            if self.on_error == "raise":
                raise
            return self._fault("generation", f"the check failed with {type(exc).__name__}: {exc}")

    def run_check(self, produce: Callable[[], Generation],
                  gather: Callable[[MetricSuite | Alert], list[MetricSuite | Alert]] = lambda local: [local], *,
                  step: int | None, epoch: int | None) -> CheckOutcome:
        """One whole check: measure this process's share, gather every process's, conclude.

        ``gather`` is the adapter's collective (identity in one process); every rank calls it,
        a rank whose generation failed sends its fault, so no rank waits for a missing one.
        """
        start = time.perf_counter()
        outcome = self.conclude(gather(self.measure(produce)), step=step, epoch=epoch)
        if outcome.result is not None:
            self.timing["total"] = time.perf_counter() - start
            outcome.log_metrics["collapseguard/seconds_total"] = self.timing["total"]
            self.timing_history.append(dict(self.timing))
        return outcome

    def conclude(self, measured: Sequence[MetricSuite | Alert], step: int | None, epoch: int | None) -> CheckOutcome:
        """Merge every process's measurement, judge, and decide. Same input -> same decision on every rank."""
        assert self.monitor is not None, "call setup() first"
        faults = [m for m in measured if isinstance(m, Alert)]
        suites = [m for m in measured if not isinstance(m, Alert)]
        self.checks_done += 1
        self.last_step = step
        result = None
        if suites and not faults:
            start = time.perf_counter()
            merged = suites[0].copy()
            for other in suites[1:]:
                merged.merge(other)
            result = self.monitor.evaluate(merged, step=step)
            self.timing["metrics"] = self.timing.get("metrics", 0.0) + time.perf_counter() - start
        for fault in faults:
            emit(Alert(fault.phase, fault.severity, fault.metric, fault.value, fault.reference, fault.threshold,
                       fault.message, fault.detector, step), new=True)
        critical = (result is not None and result.critical) or any(f.severity == "critical" for f in faults)
        self.critical_streak = self.critical_streak + 1 if critical else 0
        if result is not None or faults:
            self._reweight(result)
        should_stop, reason = self._evaluate_stopping_criteria(result, faults)
        outcome = CheckOutcome(result, should_stop, reason, self._log_metrics(result), faults)
        outcome.log_metrics.update(self.human_fraction_metrics())
        data_alerts = self._judge_data_stream(outcome, step)
        if result is not None:
            outcome.log_metrics.update({f"collapseguard/seconds_{k}": v for k, v in self.timing.items()})
        if self.alert_log is not None and self.rank == 0:  # every rank holds the same merged verdict
            self.alert_log.write_check(step=step, epoch=epoch, rank=self.rank,
                                       health=result.health if result else None,
                                       severity=result.severity if result else "fault",
                                       metrics=result.metrics if result else {},
                                       alerts=[*(result.alerts if result else []), *faults, *data_alerts],
                                       reference=result.reference if result else {},
                                       bounds=result.bounds if result else {},
                                       phase_health=result.phase_health if result else {},
                                       log_metrics=outcome.log_metrics)
            if should_stop:
                self.alert_log.write({"type": "halt", "step": step, "epoch": epoch, "rank": self.rank,
                                      "reason": reason})
        self.last_outcome = outcome
        return outcome

    def _judge_data_stream(self, outcome: CheckOutcome, step: int | None) -> list[Alert]:
        if self.data_monitor is None or self.monitor is None:
            return []
        metrics, alerts = self.data_monitor.evaluate(self.monitor.split.full, step)
        outcome.log_metrics.update({f"collapseguard/{k}": v for k, v in metrics.items()})
        keys = {(a.metric, a.severity) for a in alerts}
        for alert in alerts:
            emit(alert, new=(alert.metric, alert.severity) not in self._data_alerts)
        self._data_alerts = keys
        return alerts

    def _reweight(self, result: CheckResult | None) -> None:
        """Move the human share: up a step on a warn, two on a critical, down one after
        ``recovery_checks`` clean checks; never below the sampler's floor or above the ceiling."""
        if self.human_fraction is None or result is None:
            return
        severity = result.severity
        self.clean_streak = 0 if severity else self.clean_streak + 1
        step = {"warn": 1, "critical": 2}.get(severity or "", 0)
        if not step and self.clean_streak >= self.recovery_checks:
            step, self.clean_streak = -1, 0
        new = min(self.max_human_fraction, max(self.human_floor, self.human_fraction + step * self.reweight_step))
        new = round(new, 6)
        if new != self.human_fraction:
            why = f"{severity} alert" if step > 0 else f"{self.recovery_checks} clean checks"
            logger.warning("collapseguard reweight: human share %.2f -> %.2f from the next epoch (%s; floor %.2f, "
                           "ceiling %.2f)", self.human_fraction, new, why, self.human_floor, self.max_human_fraction)
            self.human_fraction = new
            self.sampler.set_human_fraction(new)

    def _evaluate_stopping_criteria(self, result: CheckResult | None, faults: list[Alert]) -> tuple[bool, str | None]:
        """(should_stop, reason): halt after ``patience`` consecutive critical checks when on_collapse="halt"."""
        if self.on_collapse != "halt" or self.critical_streak < self.patience:
            return False, None
        worst = next((a for a in faults if a.severity == "critical"), None)
        if worst is None and result is not None:
            worst = min((a for a in result.alerts if a.severity == "critical"),
                        key=lambda a: {"late": 0, "mid": 1, "early": 2}.get(a.phase, 3))
        what = f"{worst.metric}={worst.value:.4g} (gold reference {worst.reference:.4g}): {worst.message}" if worst else ""
        return True, (f"collapseguard halted training after {self.critical_streak} consecutive critical check(s) "
                      f"(patience={self.patience}); {what}")

    def _fault(self, metric: str, message: str, severity: str = "warn") -> Alert:
        where = f" on rank {self.rank}" if self.world_size > 1 else ""
        return Alert("fault", severity, metric, math.nan, math.nan, math.nan,  # type: ignore[arg-type]
                     f"{message}{where}; training continues (on_error={self.on_error!r})", "GuardEngine")

    @staticmethod
    def _log_metrics(result: CheckResult | None) -> dict[str, float]:
        if result is None:
            return {"collapseguard/check_failed": 1.0}
        out = {f"collapseguard/{k}": float(v) for k, v in result.metrics.items() if math.isfinite(v)}
        out["collapseguard/health"] = float(result.health)
        out["collapseguard/severity"] = float({None: 0, "warn": 1, "critical": 2}[result.severity])
        out["collapseguard/check_failed"] = 0.0
        return out

    def human_fraction_metrics(self) -> dict[str, float]:
        """The human share the sampler drew in the epoch just trained, and the target for the next."""
        if self.human_fraction is None:
            return {}
        out = {"collapseguard/human_fraction_target": self.human_fraction}
        realized = getattr(self.sampler, "realized_human_fraction", None)
        if realized is not None:
            out["collapseguard/human_fraction"] = float(realized)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": ENGINE_STATE_VERSION, "checks_done": self.checks_done,
                                 "critical_streak": self.critical_streak, "human_fraction": self.human_fraction,
                                 "clean_streak": self.clean_streak}
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
        elif self._pending_state is not None:
            state["monitor"] = self._pending_state.get("monitor")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != ENGINE_STATE_VERSION:
            raise ValueError(f"guard state version {state.get('version')!r} is not {ENGINE_STATE_VERSION}")
        if self.monitor is None:  # restored before setup (e.g. Lightning restores callbacks early)
            self._pending_state = state
            return
        self.checks_done = int(state["checks_done"])
        self.critical_streak = int(state["critical_streak"])
        self.clean_streak = int(state.get("clean_streak", 0))
        if state.get("human_fraction") is not None and self.human_fraction is not None:
            self.human_fraction = float(state["human_fraction"])
            self.sampler.set_human_fraction(self.human_fraction)
        if state.get("monitor"):
            self.monitor.load_state_dict(state["monitor"])
        self._pending_state = None
