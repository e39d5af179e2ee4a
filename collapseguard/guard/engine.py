"""The engine both training callbacks drive: schedule, fault handling, halting, state.

The adapters (``collapseguard.integrations.*``) only translate framework hooks:
they hand the engine a ``produce`` function that asks the model to continue
the gold prompts, and act on what the engine decides. Everything else -- which
prompts, measuring, merging ranks, judging, when to halt, what to save -- is
here, so both frameworks behave identically for the same outputs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from collapseguard._validation import describe, message
from collapseguard.detection.alerts import Alert, emit, logger
from collapseguard.detection.monitor import CheckResult, CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet, GoldSetModifiedError
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.prompts import GoldPrompts
from collapseguard.gold.tokenization import TokenizerAdapter
from collapseguard.guard.generation import GenerationSettings
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.options import BY_NAME, OPTIONS, check_option
from collapseguard.guard.reweighting import ReweightPolicy
from collapseguard.guard.schedule import CheckSchedule, OverheadBudget
from collapseguard.metrics import ModelStats
from collapseguard.metrics.model_side import GoldLikelihood
from collapseguard.metrics.suite import MetricSuite, SentinelSuite
from collapseguard.reporting.alertlog import AlertLog

ENGINE_STATE_VERSION = 1
TIERS = ("full", "sentinel")
COST_MARGIN = 1.25  # the budget admits a check as if it took this much longer than its tier's last one
BASELINE_SEED_OFFSET = 1_000_003  # the check before training samples from seed + this


ENGINE_OPTIONS = {o.name: o for o in OPTIONS if o.engine}
"""What the engine takes besides ``gold`` and ``tokenizer``: the callbacks' options, in their order."""


class UnrecoverableCheckError(RuntimeError):
    """A check failed where the processes can no longer agree: one rank failed inside a collective
    (a forward of a sharded model) that the others are still waiting in. Never turned into a
    fault, whatever ``on_error``: the process stops, so the launcher can end the others."""


@dataclass
class GeneratedBatch:
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
    correct: list[bool] | None = None  # each sequence judged right or wrong by a verifiable reward (guard without gold)


@dataclass
class CheckOutcome:
    """The engine's verdict on one check, for the adapter to act on."""

    result: CheckResult | None
    should_stop: bool
    reason: str | None
    log_metrics: dict[str, float] = field(default_factory=dict)
    faults: list[Alert] = field(default_factory=list)
    tier: str = "full"  # "sentinel": the model-side check (never halts by itself)
    escalate: bool = False  # a sentinel that warned: run the full check now


class GuardEngine:
    """Configuration, schedule and decisions of a collapse guard (framework-free).

    Args: those of the callbacks (:data:`collapseguard.guard.options.OPTIONS`, validated here with the one
    message format), except the adapter's own (``gold`` as a path, ``hooks``); ``caller``: the class the user built,
    named in every refusal. In short:

        generation: a :class:`~collapseguard.guard.generation.GenerationSettings` (or a dict of its fields).
        thresholds: :class:`Thresholds`, preset name, dict or YAML/JSON file.
        on_collapse: ``"warn"``, ``"halt"`` / :class:`~collapseguard.guard.halting.HaltPolicy` or a
            :class:`~collapseguard.guard.reweighting.ReweightPolicy` (it steers its sampler).
        on_error: ``"warn"`` (a failing check becomes a fault alert, training goes on) or ``"raise"``.
        schedule: a :class:`CheckSchedule`, preset name or dict.
        score_gold: also score gold continuations teacher-forced (banded perplexity, entropy).
        reference_profile / save_profile_to: judge against a trusted model's
            :class:`~collapseguard.gold.profiles.ReferenceProfile` / write one at the end of training.
        alert_log: append a JSONL trail here (rank 0).
        provenance: a :class:`~collapseguard.gold.provenance.ProvenanceLedger` logged when training starts.
        data_monitor: a :class:`~collapseguard.detection.datastream.DataStreamMonitor` judged at every check
            (never halts); it judges with these thresholds unless it was given its own.

    ``gold=None`` is for guards that judge what the trainer generated itself (the GRPO guard): no prompts, groups
    of ``samples_per_prompt`` samples and trainer-reported statistics, judged against the run's own start.

    Raises:
        TypeError / ValueError: naming the argument, its value and the valid choices.
    """

    def __init__(self, gold: GoldSet | None, *, tokenizer: Any = None, caller: str = "GuardEngine",
                 **options: Any) -> None:
        for name, value in options.items():  # one validator, one message format, naming the user's callback
            if name not in ENGINE_OPTIONS:
                raise TypeError(f"{caller}: unexpected argument {name}={describe(value)}; it takes "
                                f"{', '.join(ENGINE_OPTIONS)}")
            check_option(caller, name, value)
        o = SimpleNamespace(**{name: options.get(name, option.default) for name, option in ENGINE_OPTIONS.items()})
        if gold is not None and not isinstance(gold, GoldSet):
            raise TypeError(message(caller, "gold", gold, "a GoldSet", BY_NAME["gold"].fix, wrong_type=True))
        self.caller = caller
        self.gold = gold
        self.tokenizer = tokenizer
        try:  # once: the monitor and the data stream get this instance
            self.thresholds = Thresholds.coerce(o.thresholds)
        except (ValueError, TypeError) as exc:  # a preset, file or field the user gave: name the call it came from
            raise type(exc)(f"{caller}: thresholds={describe(o.thresholds)} is invalid: {exc}") from None
        self.on_collapse = o.on_collapse if isinstance(o.on_collapse, str) else \
            "halt" if isinstance(o.on_collapse, HaltPolicy) else "reweight"
        self.on_error = o.on_error
        try:
            self.schedule = CheckSchedule.coerce(o.schedule, caller)
        except (ValueError, TypeError) as exc:
            raise type(exc)(str(exc) if str(exc).startswith(caller) else f"{caller}: {exc}") from None
        self.every_n_epochs = self.schedule.epochs()
        self.budget = OverheadBudget(self.schedule.max_overhead)
        self.sentinel: CollapseMonitor | None = None  # built at setup when the schedule has a sentinel tier
        self.last_checked = {tier: None for tier in TIERS}  # optimizer step of each tier's latest check
        self.costs: dict[str, float | None] = {tier: None for tier in TIERS}  # seconds of each tier's latest check
        self._warned_since_full = False  # a sentinel warned and its full check ran: the next warn waits for budget
        self._starved: set[str] = set()  # tiers whose long wait for the budget was reported
        # where to roll back to: the step with the best health (the latest of equals), and its checkpoint folder
        self.last_good: dict[str, Any] | None = None
        self.checkpoints: dict[int, str] = {}  # optimizer step -> checkpoint folder the adapter saw saved
        self.generation = GenerationSettings.coerce(o.generation, caller)
        g = self.generation
        self.num_samples, self.prompt_length, self.max_new_tokens = g.num_samples, g.prompt_length, g.max_new_tokens
        self.seed, self.batch_size, self.samples_per_prompt = g.seed, g.batch_size, g.samples_per_prompt
        if gold is not None and gold.kind == "array" and self.samples_per_prompt > 1:
            raise ValueError(f"{caller}: generation.samples_per_prompt={g.samples_per_prompt} is invalid: an array "
                             "gold set has no prompts to repeat. Leave samples_per_prompt at 1.")
        self.generation_kwargs = g.sampling
        self.score_gold = o.score_gold
        self.zero3_gather = g.zero3_gather
        self.reference_profile = ReferenceProfile.coerce(o.reference_profile)
        if self.reference_profile is not None:  # the tokenizer part is checked at setup, once it is known
            if gold is None:
                raise ValueError(f"{caller}: reference_profile is judged on gold prompts: pass a GoldSet, or drop "
                                 "reference_profile")
            self.reference_profile.require_compatible(gold.fingerprint, self.settings())
        self.save_profile_to = Path(o.save_profile_to) if o.save_profile_to is not None else None
        self.alert_log = AlertLog(o.alert_log, raise_errors=o.on_error == "raise") if o.alert_log is not None else None
        self.rank, self.world_size = 0, 1
        # each guard keeps its own copy of a policy object (its counters are per run; one kwargs dict may build two
        # guards). A guard that only warns counts the critical streak too (the report and a resumed run see it)
        policy = o.on_collapse if isinstance(o.on_collapse, str) else copy.copy(o.on_collapse)
        self.halting = policy if isinstance(policy, HaltPolicy) else HaltPolicy(enabled=policy == "halt")
        self.reweighting: ReweightPolicy | None = policy if isinstance(policy, ReweightPolicy) else None
        self.provenance = o.provenance
        if o.data_monitor is not None and (gold is None or gold.kind != "text"):
            raise ValueError(f"{caller}: data_monitor watches token streams: it needs a text gold set")
        if o.data_monitor is not None:
            o.data_monitor.inherit_thresholds(self.thresholds)
        self.data_monitor = o.data_monitor
        self.check_on_train_start = self.schedule.check_on_train_start
        self._baseline_running = False
        self._data_alerts: set[tuple[str, str]] = set()
        self.monitor: CollapseMonitor | None = None
        self.gold_prompts: GoldPrompts | None = None  # the text gold set's cut: where every tier's prompts come from
        self.checks_done = 0
        self.last_outcome: CheckOutcome | None = None
        self._pending_state: dict[str, Any] | None = None
        self.timing: dict[str, float] = {}  # seconds spent in the last check, by part
        self.timing_history: list[dict[str, float]] = []  # one per successful check of this process
        self.last_step: int | None = None

    @property
    def anchor_sampler(self) -> Any:
        """The sampler a :class:`ReweightPolicy` steers (None without one)."""
        return self.reweighting.sampler if self.reweighting is not None else None

    @anchor_sampler.setter
    def anchor_sampler(self, sampler: Any) -> None:  # a run that rebuilds its DataLoader hands over the new one
        if self.reweighting is None:
            raise ValueError(f"{self.caller}: only a guard with on_collapse=ReweightPolicy(...) steers a sampler")
        self.reweighting.sampler = sampler

    @property
    def patience(self) -> int:
        return self.halting.patience

    @property
    def critical_streak(self) -> int:
        return self.halting.critical_streak

    @property
    def human_fraction(self) -> float | None:
        """The human share ``on_collapse="reweight"`` currently asks of the sampler (None when not reweighting)."""
        return self.reweighting.fraction if self.reweighting is not None else None

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
        try:
            if self.gold is not None and self.gold.kind == "text":  # tokenized and cut once, for both tiers
                self.gold_prompts = GoldPrompts(self.gold, TokenizerAdapter(tokenizer), self.prompt_length,
                                                self.max_new_tokens, caller=self.caller)
            self.monitor = CollapseMonitor(self.gold, self.thresholds, tokenizer=tokenizer if text else None,
                                           prompt_length=self.prompt_length, max_new_tokens=self.max_new_tokens,
                                           reference_profile=self.reference_profile,
                                           samples_per_prompt=self.samples_per_prompt, gold_prompts=self.gold_prompts)
        except ValueError as exc:  # e.g. a gold set too small to judge any check: name the callback the user built
            raise ValueError(str(exc).replace("CollapseMonitor:", f"{self.caller}:", 1)) from None
        # the gold reference at the check size, computed now rather than inside the first check
        self.monitor.reference(self.prompts_per_check)
        if self.schedule.sentinel_every_n_steps is not None:
            if self.gold is None or self.gold.kind != "text":
                logger.warning("%s: schedule.sentinel_every_n_steps=%d is ignored: the sentinel scores gold texts "
                               "teacher-forced, and this guard has %s", self.caller,
                               self.schedule.sentinel_every_n_steps,
                               "no gold set" if self.gold is None else "an array gold set")
            else:
                # its own history: sentinel checks are judged against sentinel checks (same texts, same scorer)
                self.sentinel = CollapseMonitor(self.gold, self.thresholds, tokenizer=tokenizer,
                                                prompt_length=self.prompt_length, max_new_tokens=self.max_new_tokens,
                                                gold_prompts=self.gold_prompts)
                for detector in self.sentinel.detectors:  # "sentinel TailLoss": its alerts say which tier spoke
                    detector.name = f"sentinel {detector.name}"
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
            "schedule": self.schedule.to_dict(),
            "guard": {"on_collapse": self.on_collapse, "on_error": self.on_error, "every_n_epochs": self.every_n_epochs,
                      "num_samples": self.num_samples, "prompts_per_check": self.prompts_per_check,
                      "samples_per_prompt": self.samples_per_prompt,
                      "prompt_length": self.prompt_length,
                      "max_new_tokens": self.max_new_tokens, "patience": self.patience, "seed": self.seed,
                      "model_stats": self.score_gold, "generation": dict(self.generation_kwargs),
                      "reference_profile": self.reference_profile.source if self.reference_profile else None,
                      "human_floor": self.reweighting.floor if self.reweighting else None,
                      "max_human_fraction": self.reweighting.ceiling if self.reweighting else None},
        }

    @property
    def prompts_per_check(self) -> int:
        """Prompts (array gold: samples) a check actually judges: ``num_samples``, or fewer when the gold set
        yields fewer prompts (half of its texts that are long enough; the other half estimates the tail)."""
        if self.gold_prompts is None:
            return self.num_samples
        return min(self.num_samples, len(self.gold_prompts))

    def settings(self) -> dict[str, Any]:
        """The generation settings a reference profile must share with this run."""
        out = {"num_samples": self.num_samples, "generation": dict(self.generation_kwargs),
               "model_stats": self.score_gold}
        if self.samples_per_prompt > 1:
            out["samples_per_prompt"] = self.samples_per_prompt
        return out

    def write_profile(self, source: str = "") -> Path | None:
        """Save a reference profile of the latest successful check to ``save_profile_to`` (if set)."""
        if self.save_profile_to is None:
            return None
        if self.monitor is None or not self.monitor.checks:
            logger.warning("save_profile_to=%s: no check ran, so no profile was written", self.save_profile_to)
            return None
        return self.monitor.profile(settings=self.settings(), source=source).save(self.save_profile_to)

    def should_check(self, epoch: int) -> bool:
        """True at the end of every ``every_n_epochs``-th epoch (``epoch`` counts from 0; never when it is 0)."""
        return self.every_n_epochs > 0 and (epoch + 1) % self.every_n_epochs == 0

    # ------------------------------------------------------------------ step schedule
    def start_training(self, step: int) -> None:
        """Training starts (or resumes) at optimizer step ``step``: start the overhead clock; step schedules count
        from here unless a resumed state says where the last checks were."""
        self.budget.start()
        for tier in TIERS:
            if self.last_checked[tier] is None:
                self.last_checked[tier] = step

    def due(self, step: int) -> str | None:
        """The tier due at optimizer step ``step`` (``"full"``, ``"sentinel"``) or None, within the overhead
        budget: a due check the budget cannot afford waits and runs at the first step it can.

        Decided from this process's clock: in a distributed run the adapter makes every rank take rank 0's answer.
        """
        sched = self.schedule
        if not sched.steps or self.monitor is None:
            return None
        for tier, every in (("full", sched.every_n_steps), ("sentinel", sched.sentinel_every_n_steps)):
            if tier == "sentinel" and self.sentinel is None:
                continue
            # a full check scores gold too: the sentinel counts from whichever tier looked last
            last = max(v for v in (self.last_checked[tier], self.last_checked["full"], 0) if v is not None)
            if every is None or step - last < every:
                continue
            cost = self.costs[tier]
            # a check can take longer than the last one of its tier (load, longer outputs): admit it only if the
            # share stays within the cap with a margin, so the cap is not overshot by one slow check
            if self.budget.allows(None if cost is None else cost * COST_MARGIN):
                return tier
            self._warn_starved(tier, every, step - last)
        return None

    def final_check_due(self, step: int) -> bool:
        """Whether training that ends at optimizer step ``step`` needs a last full check: a step schedule whose last
        full check judged an earlier model (the interval, or the overhead budget, left the last steps unchecked).

        It runs outside the budget: the run's last verdict, its trail and its profile describe the model the run
        hands over, and a check after training costs no training time.
        """
        return self.schedule.steps and self.monitor is not None and self.last_checked["full"] != step

    def _warn_starved(self, tier: str, every: int, waited: int) -> None:
        """Say once per tier when the budget keeps a due check waiting for long: the user's cap is honoured, but a
        run that is never checked must not look like a healthy one."""
        if waited < 2 * every or tier in self._starved:
            return
        self._starved.add(tier)
        cost = self.costs[tier] or 0.0
        logger.warning("%s: the %s check, due every %d steps, has waited %d steps for the overhead budget "
                       "(max_overhead=%s; one costs %.1f s, and training has run %.0f s): raise max_overhead, score "
                       "fewer gold texts (sentinel_samples / num_samples), or check less often", self.caller, tier,
                       every, waited, self.schedule.max_overhead, cost, self.budget.elapsed)

    def disable_sentinel(self, reason: str) -> None:
        """Run without the sentinel tier (the adapter cannot score gold teacher-forced), saying so once."""
        if self.sentinel is not None:
            logger.warning("%s: schedule.sentinel_every_n_steps=%s is ignored: %s; step checks are full checks only",
                           self.caller, self.schedule.sentinel_every_n_steps, reason)
        self.sentinel = None

    def sentinel_prompts(self, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """This process's share of the gold prompts the sentinel scores (the first ``sentinel_samples``)."""
        if self.sentinel is None:
            raise RuntimeError(f"{self.caller}: the schedule has no sentinel tier (set sentinel_every_n_steps)")
        return self.gold_prompts.prompts(self.sentinel_size, rank, world_size)

    def sentinel_continuations(self, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """The gold continuations of :meth:`sentinel_prompts`."""
        if self.sentinel is None:
            raise RuntimeError(f"{self.caller}: the schedule has no sentinel tier (set sentinel_every_n_steps)")
        return self.gold_prompts.continuations(self.sentinel_size, rank, world_size)

    @property
    def sentinel_size(self) -> int:
        """Gold texts a sentinel check scores: ``sentinel_samples`` (None: ``num_samples``), or fewer where gold has
        fewer prompts."""
        if self.sentinel is None:
            return 0
        return min(self.schedule.sentinel_samples or self.num_samples, len(self.gold_prompts))

    @property
    def tiers_share_texts(self) -> bool:
        """Whether the sentinel scores exactly the full check's gold texts, so that each tier's model-side points
        are part of the other's trajectory."""
        return self.sentinel is not None and self.sentinel_size == min(self.num_samples, len(self.gold_prompts))

    def _share_model_side(self, result: CheckResult, step: int | None, sentinel: bool) -> None:
        """Give the other tier this check's model-side metrics (same texts, same teacher-forced scorer)."""
        other = self.monitor if sentinel else self.sentinel
        if other is None or not self.tiers_share_texts or step is None:
            return
        keys = (*GoldLikelihood.outputs, "num_outputs")
        shared = {k: result.metrics[k] for k in keys if k in result.metrics}
        if "gold_ppl" in shared:  # a full check of a model the adapter cannot score teacher-forced has none
            other.record_model_side(shared, step)

    def prompts(self, rank: int = 0, world_size: int = 1, *, repeat: bool = True) -> list[np.ndarray]:
        """This process's share of the gold prompts (disjoint across ranks; together ``num_samples``), each
        repeated ``samples_per_prompt`` times in a row (``repeat=False``: once), so a group never straddles ranks."""
        self._ready("prompts")
        share = self.gold_prompts.prompts(self.num_samples, rank, world_size)
        k = self.samples_per_prompt if repeat else 1
        return [p for p in share for _ in range(k)]

    def gold_samples(self, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Held-out gold rows for a ``ModelHooks.score`` hook (array gold), sharded like the prompts."""
        return self.gold.array[: self.num_samples][rank::world_size]

    def gold_continuations(self, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        """The gold continuations of :meth:`prompts`, for teacher-forced model statistics."""
        self._ready("gold_continuations")
        return self.gold_prompts.continuations(self.num_samples, rank, world_size)

    @property
    def check_seed(self) -> int:
        """The generation seed of the current check (the baseline draws from a stream of its own, so a run's
        checks sample the same way with and without it)."""
        return self.seed + (BASELINE_SEED_OFFSET if self._baseline_running else self.checks_done)

    def run_baseline(self, produce: Callable[[], GeneratedBatch],
                     gather: Callable[[MetricSuite | Alert], list[MetricSuite | Alert]] = lambda local: [local], *,
                     step: int | None, tier: str = "full") -> bool:
        """Measure the model before training (``check_on_train_start``); every rank calls it, like a check.

        Recorded in the monitor's history (``tier="sentinel"``: the sentinel's) as the run's starting point, never
        judged and never halting; its duration is the tier's first cost estimate for the overhead budget, and it is
        not counted in the guard's share of training time. Skipped when disabled or when the run already has a
        history (a resumed run). Returns whether it ran.
        """
        monitor = self._ready("check_before_training", tier)
        if not self.check_on_train_start or monitor.history:
            return False
        self._baseline_running = True
        start = time.perf_counter()
        try:
            measured = gather(self.measure(produce, tier))
        finally:
            self._baseline_running = False
        self.costs[tier] = time.perf_counter() - start
        faults = [m for m in measured if isinstance(m, Alert)]
        if faults:
            logger.warning("collapseguard: the check before training failed (%s); the run is judged without "
                           "its starting point", faults[0].message)
            return False
        merged = measured[0].copy()
        for other in measured[1:]:
            merged.merge(other)
        metrics = merged.compute()
        monitor.record_baseline(metrics, step=step)
        if self.alert_log is not None and self.rank == 0:
            self.alert_log.write({"type": "baseline", "tier": tier, "step": step, "metrics": metrics})
        return True

    # ------------------------------------------------------------------ check
    def measure(self, produce: Callable[[], GeneratedBatch], tier: str = "full") -> MetricSuite | Alert:
        """Run this process's generation (``tier="sentinel"``: teacher-forced scoring only) and measure it; a failure
        becomes a fault alert."""
        self._ready("measure")
        try:
            if self.gold is not None:
                self.gold.verify()
        except GoldSetModifiedError as exc:
            if self.on_error == "raise":  # docs/health.md: a changed gold set raises under on_error="raise"
                raise
            return self._fault("gold_fingerprint", f"{exc}", "critical")
        try:
            start = time.perf_counter()
            gen = produce()
            generated = time.perf_counter()
            if tier == "sentinel":
                if gen.model_stats is None or self.sentinel is None:
                    return self._fault("sentinel", "the sentinel check got no gold scores from the model")
                suite: MetricSuite = SentinelSuite(self.sentinel.measurer.context).update(gen.model_stats)
                self.timing = {"scoring": generated - start, "metrics": time.perf_counter() - generated}
                return suite
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
                                   "truncated to it (check the generate hook's length settings)", too_long,
                                   len(gen.sequences), self.rank, self.max_new_tokens)
                suite = self.monitor.measure(gen.sequences or [], finished=gen.finished, model_stats=gen.model_stats,
                                             reported=gen.reported, correct=gen.correct)
            self.timing = {"generation": generated - start, "metrics": time.perf_counter() - generated}
            return suite
        except UnrecoverableCheckError:
            raise
        except Exception as exc:  # a failing check must not kill training unless asked to
            if self.on_error == "raise":
                raise
            return self._fault("generation", f"the check failed with {type(exc).__name__}: {exc}")

    def run_scheduled(self, tier: str, produce: Callable[[], GeneratedBatch],
                      produce_sentinel: Callable[[], GeneratedBatch] | None,
                      gather: Callable[[MetricSuite | Alert], list[MetricSuite | Alert]] = lambda local: [local], *,
                      step: int | None, epoch: int | None) -> CheckOutcome:
        """Run the tier :meth:`due` chose; a sentinel that warns is followed at once by a full check, whose verdict
        (the sentinel's metrics added to its log) is what the adapter acts on."""
        if tier == "sentinel":
            if produce_sentinel is None:
                raise ValueError(f"{self.caller}: a sentinel check needs the adapter's teacher-forced scorer")
            outcome = self.run_check(produce_sentinel, gather, step=step, epoch=epoch, tier="sentinel")
            if not outcome.escalate:
                return outcome
            full = self.run_check(produce, gather, step=step, epoch=epoch, tier="full")
            full.log_metrics = {**outcome.log_metrics, **full.log_metrics}
            return full
        return self.run_check(produce, gather, step=step, epoch=epoch, tier=tier)

    def run_check(self, produce: Callable[[], GeneratedBatch],
                  gather: Callable[[MetricSuite | Alert], list[MetricSuite | Alert]] = lambda local: [local], *,
                  step: int | None, epoch: int | None, tier: str = "full", after_training: bool = False) -> CheckOutcome:
        """One whole check: measure this process's share, gather every process's, conclude.

        ``gather`` is the adapter's collective (identity in one process); every rank calls it,
        a rank whose generation failed sends its fault, so no rank waits for a missing one.
        ``tier="sentinel"``: ``produce`` only scores the sentinel's gold subset teacher-forced.
        ``after_training``: the last check of :meth:`final_check_due`, which costs no training time: kept out of the
        guard's share, like the check before training.
        """
        start = time.perf_counter()
        measured = gather(self.measure(produce, tier))
        # the check's cost so far (generation or scoring, measuring, gathering; judging adds milliseconds): known
        # before conclude() writes the trail line, so the line carries it and the guard's share
        elapsed = time.perf_counter() - start
        count = self.budget.add if not after_training else lambda seconds: None
        count(elapsed)
        if step is not None:
            self.last_checked[tier] = step
        ok = not any(isinstance(m, Alert) for m in measured)
        prefix = "collapseguard/" if tier == "full" else "collapseguard/sentinel/"
        extra = {"collapseguard/overhead": self.budget.share, **({f"{prefix}seconds_total": elapsed} if ok else {})}
        outcome = self.conclude(measured, step=step, epoch=epoch, tier=tier, extra=extra, after_training=after_training)
        count(time.perf_counter() - start - elapsed)
        if outcome.result is not None:
            self.costs[tier] = elapsed
            self.timing["total"] = elapsed
            if tier == "full":
                self.timing_history.append(dict(self.timing))
        return outcome

    def conclude(self, measured: Sequence[MetricSuite | Alert], step: int | None, epoch: int | None,
                 tier: str = "full", extra: dict[str, float] | None = None,
                 after_training: bool = False) -> CheckOutcome:
        """Merge every process's measurement, judge, and decide. Same input -> same decision on every rank.

        A sentinel check (``tier="sentinel"``) is judged against the sentinel's own history and never halts or
        reweights by itself: it sets :attr:`CheckOutcome.escalate` when it warns, and the full check decides.
        ``after_training``: the verdict on the model training handed over; its alerts are logged, but there is no run
        left to halt or reweight.
        """
        sentinel = tier == "sentinel"
        monitor = self._ready("conclude", tier)
        faults = [m for m in measured if isinstance(m, Alert)]
        suites = [m for m in measured if not isinstance(m, Alert)]
        if not sentinel:
            self.checks_done += 1
            self.last_step = step
        result = None
        if suites and not faults:
            start = time.perf_counter()
            merged = suites[0].copy()
            for other in suites[1:]:
                merged.merge(other)
            result = monitor.evaluate(merged, step=step)
            self.timing["metrics"] = self.timing.get("metrics", 0.0) + time.perf_counter() - start
        for fault in faults:
            emit(Alert(fault.phase, fault.severity, fault.metric, fault.value, fault.reference, fault.threshold,
                       fault.message, fault.detector, step), new=True)
        if sentinel:
            outcome = CheckOutcome(result, False, None, self._log_metrics(result, "collapseguard/sentinel/"), faults,
                                   tier="sentinel", escalate=self._escalate(result))
            data_alerts: list[Alert] = []
        else:
            if self.reweighting is not None and not after_training:
                self.reweighting.update(result)
            should_stop, reason = self.halting.decide(result, faults) if not after_training else (False, None)
            self._track_last_good(result, step)
            if should_stop and self.last_good is not None:
                reason = f"{reason}; {self.describe_last_good()}"
            outcome = CheckOutcome(result, should_stop, reason, self._log_metrics(result), faults)
            outcome.log_metrics.update(self.human_fraction_metrics())
            data_alerts = self._judge_data_stream(outcome, step)
        if result is not None:
            self._share_model_side(result, step, sentinel)
            prefix = "collapseguard/sentinel/" if sentinel else "collapseguard/"
            outcome.log_metrics.update({f"{prefix}seconds_{k}": v for k, v in self.timing.items()})
        outcome.log_metrics.update(extra or {})
        if self.alert_log is not None and self.rank == 0:  # every rank holds the same merged verdict
            self.alert_log.write_check(step=step, epoch=epoch, rank=self.rank, tier=tier,
                                       health=result.health if result else None,
                                       severity=result.severity if result else "fault",
                                       metrics=result.metrics if result else {},
                                       alerts=[*(result.alerts if result else []), *faults, *data_alerts],
                                       reference=result.reference if result else {},
                                       bounds=result.bounds if result else {},
                                       phase_health=result.phase_health if result else {},
                                       log_metrics=outcome.log_metrics,
                                       **({"last_good": dict(self.last_good)} if self.last_good and not sentinel else {}))
            if outcome.should_stop:
                self.alert_log.write({"type": "halt", "step": step, "epoch": epoch, "rank": self.rank,
                                      "reason": outcome.reason, "last_good": self.last_good})
        if not sentinel:
            self.last_outcome = outcome
        return outcome

    def _track_last_good(self, result: CheckResult | None, step: int | None) -> None:
        """Keep the judged full check with the best health (the latest of equals: the least training to lose); a
        critical check is never good."""
        if result is None or not result.judged or not math.isfinite(result.health) or step is None \
                or result.severity == "critical":
            return
        if self.last_good is None or result.health >= self.last_good["health"]:
            self.last_good = {"step": step, "health": result.health, "checkpoint": self.checkpoints.get(step)}

    def note_checkpoint(self, step: int, folder: str) -> None:
        """The adapter saw the framework save a checkpoint of optimizer step ``step`` in ``folder``."""
        self.checkpoints[int(step)] = str(folder)
        if self.last_good is not None and self.last_good["step"] == step:
            self.last_good["checkpoint"] = str(folder)
            if self.alert_log is not None and self.rank == 0:
                self.alert_log.write({"type": "last_good", **self.last_good})

    def describe_last_good(self) -> str:
        """Where to roll back to, in words (empty before any judged check)."""
        good = self.last_good
        if good is None:
            return ""
        where = f", checkpoint {good['checkpoint']}" if good.get("checkpoint") else \
            " (no checkpoint was saved at that step)"
        return f"last good checkpoint: step {good['step']} (health {good['health']:.2f}){where}"

    def _escalate(self, result: CheckResult | None) -> bool:
        """Whether a sentinel verdict calls for the full check now: always on a critical; on a warn, the first time
        since the sentinel was last clean, and after that only within the overhead budget (a sentinel that keeps
        warning on a healthy run must not make every sentinel a full check)."""
        if result is None or result.severity is None:
            self._warned_since_full = False
            return False
        if result.severity == "critical" or not self._warned_since_full or self.budget.allows(self.costs["full"]):
            self._warned_since_full = True
            return True
        return False

    def _judge_data_stream(self, outcome: CheckOutcome, step: int | None) -> list[Alert]:
        if self.data_monitor is None or self.monitor is None:
            return []
        metrics, alerts = self.data_monitor.evaluate(self.gold_prompts.split.full, step)
        outcome.log_metrics.update({f"collapseguard/{k}": v for k, v in metrics.items()})
        keys = {(a.metric, a.severity) for a in alerts}
        for alert in alerts:
            emit(alert, new=(alert.metric, alert.severity) not in self._data_alerts)
        self._data_alerts = keys
        return alerts

    def _ready(self, method: str, tier: str = "full") -> CollapseMonitor:
        """The tier's monitor, or a clear refusal before :meth:`setup` (or for a sentinel tier the schedule lacks):
        an ``assert`` would vanish under ``python -O`` and fail later, far from the cause."""
        if self.monitor is None:
            raise RuntimeError(f"{self.caller}.engine.{method}() was called before setup(): the adapter sets the "
                               "engine up at train start (setup(tokenizer, rank=..., world_size=...))")
        if tier != "sentinel":
            return self.monitor
        if self.sentinel is None:
            raise RuntimeError(f"{self.caller}.engine.{method}(tier='sentinel'): this guard's schedule has no "
                               "sentinel tier; pass schedule=CheckSchedule(sentinel_every_n_steps=...)")
        return self.sentinel

    def _fault(self, metric: str, message: str, severity: str = "warn") -> Alert:
        """A check that could not run, as a fault alert; under ``on_error="raise"`` an error instead (docs/faults.md)."""
        where = f" on rank {self.rank}" if self.world_size > 1 else ""
        if self.on_error == "raise":
            raise RuntimeError(f"{self.caller}: {message}{where} (on_error='raise')")
        return Alert("fault", severity, metric, math.nan, math.nan, math.nan,  # type: ignore[arg-type]
                     f"{message}{where}; training continues (on_error={self.on_error!r})", "GuardEngine")

    @staticmethod
    def _log_metrics(result: CheckResult | None, prefix: str = "collapseguard/") -> dict[str, float]:
        if result is None:
            return {f"{prefix}check_failed": 1.0}
        out = {f"{prefix}{k}": float(v) for k, v in result.metrics.items() if math.isfinite(v)}
        if result.judged:  # a check too small to judge has no health (NaN) nor severity: either would claim a verdict
            out[f"{prefix}health"] = float(result.health)
            out[f"{prefix}severity"] = float({None: 0, "warn": 1, "critical": 2}[result.severity])
        out[f"{prefix}check_failed"] = 0.0
        return out

    def human_fraction_metrics(self) -> dict[str, float]:
        """The human share the sampler drew in the epoch just trained, and the target for the next."""
        return self.reweighting.log_metrics() if self.reweighting is not None else {}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": ENGINE_STATE_VERSION, "checks_done": self.checks_done,
                                 "critical_streak": self.critical_streak, "human_fraction": self.human_fraction,
                                 "clean_streak": self.reweighting.clean_streak if self.reweighting else 0}
        state["schedule"] = {"last_checked": dict(self.last_checked), "warned_since_full": self._warned_since_full}
        state["last_good"] = self.last_good
        state["checkpoints"] = {str(k): v for k, v in self.checkpoints.items()}
        if self.monitor is not None:
            state["monitor"] = self.monitor.state_dict()
            if self.sentinel is not None:
                state["sentinel"] = self.sentinel.state_dict()
        elif self._pending_state is not None:
            state["monitor"] = self._pending_state.get("monitor")
            state["sentinel"] = self._pending_state.get("sentinel")
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != ENGINE_STATE_VERSION:
            raise ValueError(f"guard state version {state.get('version')!r} is not {ENGINE_STATE_VERSION}")
        if self.monitor is None:  # restored before setup (e.g. Lightning restores callbacks early)
            self._pending_state = state
            return
        self.checks_done = int(state["checks_done"])
        self.last_good = state.get("last_good")
        self.checkpoints = {int(k): v for k, v in (state.get("checkpoints") or {}).items()}
        self.halting.critical_streak = int(state["critical_streak"])
        if self.reweighting is not None:
            self.reweighting.restore(state.get("human_fraction"), int(state.get("clean_streak", 0)))
        if state.get("monitor"):
            self.monitor.load_state_dict(state["monitor"])
        if state.get("sentinel") and self.sentinel is not None:
            self.sentinel.load_state_dict(state["sentinel"])
        schedule = state.get("schedule") or {}
        for tier, step in (schedule.get("last_checked") or {}).items():
            if tier in self.last_checked:
                self.last_checked[tier] = step
        self._warned_since_full = bool(schedule.get("warned_since_full", False))
        self._pending_state = None


def __getattr__(name: str) -> Any:
    if name == "Generation":  # renamed in 0.2: "generation" means a retraining round in this field
        from collapseguard._deprecation import warn_deprecated

        warn_deprecated("collapseguard.guard.engine.Generation", "GeneratedBatch")
        return GeneratedBatch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
