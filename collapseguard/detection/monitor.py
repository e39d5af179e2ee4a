"""CollapseMonitor: judge measured outputs against gold's reference, keep the run's history.

The data flow is one-way: the gold set's cut (:class:`~collapseguard.gold.prompts.GoldPrompts`) -> outputs ->
:class:`~collapseguard.metrics.measurer.Measurer` (a mergeable :class:`~collapseguard.metrics.suite.MetricSuite`) ->
:meth:`CollapseMonitor.evaluate` (metrics, gold's reference values from
:class:`~collapseguard.metrics.gold_reference.GoldReference`, detectors, patience) -> :class:`CheckResult` with a
health score and alerts. The monitor builds the three from its arguments and judges; :meth:`measure`,
:meth:`reference` and :attr:`split` hand on to them. :meth:`check` chains measuring and judging for one process; a
distributed caller merges the suites of all ranks in between.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collapseguard._deprecation import deprecate_kwargs
from collapseguard._validation import NONE, ArgumentTypeError, InstanceOf, Interval, validate
from collapseguard.detection.alerts import PHASES, SEVERITY_RANK, Alert, emit, logger
from collapseguard.detection.detectors import DEFAULT_DETECTORS, Detector, Finding, PolicyNarrowing
from collapseguard.detection.thresholds import Thresholds
from collapseguard.detection.trajectory import Anchor, find_anchor
from collapseguard.gold.goldset import GoldSet, GoldSplit
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.prompts import GoldPrompts
from collapseguard.gold.tokenization import TokenizerAdapter
from collapseguard.metrics import ModelStats
from collapseguard.metrics.gold_reference import GoldReference
from collapseguard.metrics.measurer import Measurer
from collapseguard.metrics.suite import MetricSuite

STATE_VERSION = 1
_CALLER = "CollapseMonitor"


@dataclass
class CheckResult:
    """What one check found.

    Attributes:
        step: training step (or generation) of the check.
        health: in [0, 1]; 1 = as diverse as gold, 0.5 = at a critical bound, 0 = fully collapsed; NaN for a
            check that was not judged (``judged`` False).
        phase_health: health per phase (``early``, ``mid``, ``late``); ``health`` is their minimum.
        metrics: every metric measured on the outputs.
        reference: the same metrics on gold (same count and length).
        alerts: alerts raised at this check (after patience).
        judged: False when the check had too few outputs to judge (no alerts then).
        bounds: per judged metric, its reference and warn/critical bounds in the metric's units,
            and ``direction`` (``"low"``: bad below the bounds; ``"high"``: bad above).
        anchor: the run's point closest to the human data (``source``, ``step``, ``distance``, ``value``; see
            :mod:`collapseguard.detection.trajectory`), against which output-side signals are judged as well as gold.
    """

    step: int | None
    health: float
    phase_health: dict[str, float]
    metrics: dict[str, float]
    reference: dict[str, float]
    alerts: list[Alert] = field(default_factory=list)
    judged: bool = True
    bounds: dict[str, dict[str, float | str]] = field(default_factory=dict)
    anchor: dict[str, Any] = field(default_factory=dict)

    @property
    def learning(self) -> bool:
        """True when this check is the run's closest approach to the human data so far (see
        :mod:`collapseguard.detection.trajectory`): the model is still getting better, and output-side signals hold."""
        return self.anchor.get("source") == "current"

    @property
    def critical(self) -> bool:
        """True when any alert of the check is critical."""
        return any(a.severity == "critical" for a in self.alerts)

    @property
    def severity(self) -> str | None:
        """The worst severity among the alerts, or None."""
        return max((a.severity for a in self.alerts), key=SEVERITY_RANK.__getitem__, default=None)

    def to_dict(self) -> dict[str, Any]:
        """The check's step, health, metrics, references and alerts as a JSON-ready dict."""
        return {
            "step": self.step, "health": self.health, "phase_health": dict(self.phase_health),
            "metrics": dict(self.metrics), "reference": dict(self.reference),
            "alerts": [a.to_dict() for a in self.alerts], "judged": self.judged,
            "bounds": {k: dict(v) for k, v in self.bounds.items()}, "anchor": dict(self.anchor),
        }

    def summary(self) -> str:
        """One line: the step, health, worst severity and each phase's health."""
        worst = self.severity or "ok"
        return (f"step {self.step}: health {self.health:.2f} ({worst}); "
                + ", ".join(f"{p} {h:.2f}" for p, h in self.phase_health.items()))


class CollapseMonitor:
    """Judge generated outputs against a gold set, check after check.

    Args:
        gold: the human gold set (text or array).
        thresholds: a :class:`Thresholds`, a preset name or a dict (default ``"balanced"``).
        tokenizer: for text gold sets: a HF tokenizer, ``tokenizers.Tokenizer``, a callable, or
            None for the built-in :class:`~collapseguard.gold.tokenization.SimpleTokenizer`.
        prompt_length: gold tokens given to the model as the prompt.
        max_new_tokens: length of the gold reference continuation; longer outputs are truncated
            to it before measuring, so outputs and gold are compared like with like.
        detectors: detector classes to run (default: TailLoss, VarianceShrinkage, RepetitionLoop).
        reference_profile: a :class:`~collapseguard.gold.profiles.ReferenceProfile` (or the path of its JSON) of a
            trusted earlier model: rises are then measured from it as well as from the run's best,
            and diversity is judged against it where it sits below gold.
        samples_per_prompt: k samples of each prompt, passed one after another: the metrics across prompts read
            each group's first sample, the within-prompt metrics (``distinct_k``, ``within_distinct_2``,
            ``within_similarity``) every group, judged against gold's k responses per prompt where the gold set has
            them (:meth:`GoldSet.from_pairs`), else against the run's own start.
        gold_prompts: ``gold`` already cut at these lengths (:class:`~collapseguard.gold.prompts.GoldPrompts`), to
            share one tokenization between monitors (the engine's full and sentinel checks); its tokenizer is then
            the one used. None: cut here.

    ``gold=None`` (with ``samples_per_prompt > 1``) judges groups of samples of any prompts -- the groups an RL
    trainer generated -- and statistics the trainer reports (``policy_entropy``, ``frac_reward_zero_std``)
    against the run's own start: there is no human reference, so nothing is compared with gold.
    Raises:
        TypeError / ValueError: for a non-GoldSet ``gold``, bad thresholds or lengths, or a text gold set that gives
            fewer prompts than ``min_outputs`` (no check could ever be judged; the message gives the size it needs).
        ProfileMismatchError: for a reference made with another gold set, tokenizer or lengths.

    >>> gold = GoldSet.from_texts([f"text number {i} about topic {i % 7} and more" for i in range(40)])
    >>> monitor = CollapseMonitor(gold, prompt_length=2, max_new_tokens=8)
    >>> monitor.check(["the same words again"] * 40, step=1).critical
    True
    """

    @deprecate_kwargs({"reference": "reference_profile"})
    def __init__(self, gold: GoldSet, thresholds: Thresholds | str | dict[str, Any] | None = None, *,
                 tokenizer: Any = None, prompt_length: int = 16, max_new_tokens: int = 32,
                 detectors: Sequence[type[Detector]] = DEFAULT_DETECTORS,
                 reference_profile: ReferenceProfile | str | dict[str, Any] | None = None,
                 samples_per_prompt: int = 1, gold_prompts: GoldPrompts | None = None) -> None:
        validate(_CALLER, "gold", gold, InstanceOf(GoldSet, name="a GoldSet"), NONE,
                 fix="build one with GoldSet.from_texts / from_jsonl / from_arrays")
        validate(_CALLER, "samples_per_prompt", samples_per_prompt, Interval(int, 1, None),
                 fix="pass the number of samples generated for each prompt (1: one per prompt)",
                 type_error=ArgumentTypeError)
        if gold is None and samples_per_prompt < 2:
            raise ValueError(f"{_CALLER}: gold=None judges groups of samples against the run's own start: pass "
                             "samples_per_prompt >= 2 (the group size), or a GoldSet")
        if gold is not None and gold.kind == "array" and samples_per_prompt > 1:
            raise ValueError(f"{_CALLER}: samples_per_prompt > 1 needs prompts: an array gold set has none; drop "
                             "samples_per_prompt")
        self.gold = gold
        self.samples_per_prompt = samples_per_prompt
        self.thresholds = Thresholds.coerce(thresholds)
        self.detectors = [d() for d in detectors]
        self.kind = gold.kind if gold is not None else "text"
        self.history: list[dict[str, Any]] = []
        # model-side points another tier measured on the same gold texts between this monitor's checks (the
        # engine's sentinel): part of the run's trajectory for the best point and the model-side rises
        self.model_side: list[dict[str, Any]] = []
        self.max_new_tokens = max_new_tokens
        if self.kind == "array" and tokenizer is not None:
            raise ValueError(f"{_CALLER}: tokenizer is for text gold sets; this gold set holds arrays: drop "
                             "tokenizer")
        # stage 1: the prompts and reference continuations (text gold only); stage 3: measuring, and gold's own values
        self.gold_prompts: GoldPrompts | None = None
        if gold is not None and self.kind == "text":
            self.gold_prompts = self._cut(gold, gold_prompts, tokenizer, prompt_length, max_new_tokens)
            self._require_judgeable(gold)
        elif gold_prompts is not None:
            raise ValueError(f"{_CALLER}: gold_prompts is the cut of a text gold set; this monitor has "
                             f"{'no gold set' if gold is None else 'an array gold set'}: drop gold_prompts")
        self.measurer = Measurer(gold, self.gold_prompts, max_new_tokens=max_new_tokens,
                                 tokenizer=TokenizerAdapter(tokenizer) if gold is None else None,
                                 samples_per_prompt=samples_per_prompt)
        self.gold_reference = GoldReference(self.measurer, self.gold_prompts)
        self.reference_profile = ReferenceProfile.coerce(reference_profile)
        if self.reference_profile is not None:
            if gold is None:
                raise ValueError(f"{_CALLER}: a reference profile is judged on gold prompts: pass a GoldSet, or drop "
                                 "reference_profile")
            self.reference_profile.require_compatible(gold.fingerprint, self.settings())

    @staticmethod
    def _cut(gold: GoldSet, given: GoldPrompts | None, tokenizer: Any, prompt_length: int,
             max_new_tokens: int) -> GoldPrompts:
        """``given`` where it is this gold set cut at these lengths, else a new cut (tokenizes every gold text)."""
        if given is None:
            return GoldPrompts(gold, TokenizerAdapter(tokenizer), prompt_length, max_new_tokens, caller=_CALLER)
        validate(_CALLER, "gold_prompts", given, InstanceOf(GoldPrompts, name="a GoldPrompts"), NONE,
                 fix="pass GoldPrompts(gold, tokenizer, prompt_length, max_new_tokens), or None")
        if given.gold is not gold or (given.prompt_length, given.max_new_tokens) != (prompt_length, max_new_tokens):
            raise ValueError(f"{_CALLER}: gold_prompts is cut from another gold set or at other lengths than "
                             f"prompt_length={prompt_length}, max_new_tokens={max_new_tokens}: cut this gold set at "
                             "these lengths, or drop gold_prompts")
        return given

    @property
    def split(self) -> GoldSplit | None:
        """The prompt half of the gold cut (:attr:`GoldPrompts.split`); None without a text gold set."""
        return self.gold_prompts.split if self.gold_prompts is not None else None

    @property
    def tokenizer(self) -> TokenizerAdapter | None:
        """The tokenizer outputs are measured with (None for an array gold set)."""
        return self.measurer.tokenizer

    @property
    def dim(self) -> int:
        """Features of an array gold set's rows."""
        return self.measurer.dim

    def _require_judgeable(self, gold: GoldSet) -> None:
        """Refuse a text gold set whose prompt half can never give ``min_outputs`` outputs: every check would be
        reported and never judged, which a run would only learn from a log line at each check."""
        need = self.thresholds.min_outputs
        if len(self.split) >= need:
            return
        what = "prompts with a response" if gold.is_chat else "texts long enough for prompt_length + a continuation"
        raise ValueError(
            f"{_CALLER}: gold={gold!r} gives at most {len(self.split)} prompts per check, fewer than "
            f"min_outputs={need}: no check could ever be judged. Pass a gold set of at least {2 * need - 1} {what} "
            f"(half of them give prompts, the other half estimates the rare tail), or lower min_outputs in "
            f"thresholds (judging fewer outputs is noisier)")

    def settings(self) -> dict[str, Any]:
        """What must match for two measurements to be comparable (recorded in profiles)."""
        if self.kind == "array":
            return {"kind": "array", "dim": self.dim}
        if self.gold is None:
            return {"kind": "groups", "samples_per_prompt": self.samples_per_prompt}
        out = {"kind": "text", "tokenizer": self.tokenizer.identity, "prompt_length": self.split.prompt_length,
               "max_new_tokens": self.max_new_tokens}
        if self.samples_per_prompt > 1:
            out["samples_per_prompt"] = self.samples_per_prompt
        return out

    def profile(self, result: CheckResult | None = None, *, settings: dict[str, Any] | None = None,
                source: str = "") -> ReferenceProfile:
        """A reference profile of ``result`` (default: the latest check), to judge later runs against.

        ``settings`` adds the caller's comparable settings (the engine adds generation settings).
        """
        if result is not None:
            metrics = result.metrics
        elif self.checks:
            metrics = self.checks[-1]["metrics"]
        else:
            raise ValueError("no check to profile yet: run check() first or pass result=")
        if self.gold is None:
            raise ValueError("a monitor without gold has no profile: profiles are judged on gold prompts")
        return ReferenceProfile(self.gold.fingerprint, {**self.settings(), **(settings or {})}, dict(metrics),
                                source=source)

    # ------------------------------------------------------------ measuring (metrics/: the measurer's)
    def new_suite(self) -> MetricSuite:
        """An empty metric suite for this gold set (:meth:`Measurer.new_suite`); suites merge exactly."""
        return self.measurer.new_suite()

    def answers(self, outputs: Sequence[Any]) -> list[np.ndarray]:
        """The normalised answer words of each output (:meth:`Measurer.answers`)."""
        return self.measurer.answers(outputs)

    def measure(self, outputs: Any, *, finished: Sequence[bool] | None = None,
                model_stats: ModelStats | None = None, gold_loglik: Sequence[float] | None = None,
                reported: dict[str, Sequence[float]] | None = None,
                correct: Sequence[bool] | None = None) -> MetricSuite:
        """The mergeable metric states of ``outputs`` (texts, token-id lists or an (n, d) array).

        ``model_stats`` (text) and ``gold_loglik`` (arrays: the model's log-likelihood of held-out
        gold samples) add the model-side statistics; ``reported`` (monitor without gold) the statistics
        a trainer reports, e.g. ``{"policy_entropy": [...], "frac_reward_zero_std": [...]}``, and ``correct`` each
        output judged right or wrong (pass@k; a monitor without gold). See :meth:`Measurer.measure`.
        """
        return self.measurer.measure(outputs, finished=finished, model_stats=model_stats, gold_loglik=gold_loglik,
                                     reported=reported, correct=correct)

    def reference(self, num_outputs: int) -> dict[str, float]:
        """The metrics of gold itself, on as many gold samples as there are outputs (cached;
        :meth:`GoldReference.values`)."""
        return self.gold_reference.values(num_outputs)

    # ------------------------------------------------------------- judging
    def check(self, outputs: Any, step: int | None = None, *, finished: Sequence[bool] | None = None,
              model_stats: ModelStats | None = None, gold_loglik: Sequence[float] | None = None) -> CheckResult:
        """Measure and judge one batch of outputs; logs and warns on alerts."""
        suite = self.measure(outputs, finished=finished, model_stats=model_stats, gold_loglik=gold_loglik)
        return self.evaluate(suite, step=step)

    def evaluate(self, suite: MetricSuite, step: int | None = None) -> CheckResult:
        """Judge merged metric states; appends to :attr:`history`."""
        return self.judge(suite.compute(), step=step)

    def record_baseline(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Keep the metrics of the model as it was before training, unjudged: the run's starting point.

        A model that gets worse than where it started (a fine-tuned checkpoint trained on its own samples,
        a model trained on degenerate data) is then judged against it from the first check on.
        """
        self.history.append({"step": step, "baseline": True, "health": None, "phase_health": {},
                             "metrics": dict(metrics), "raw": {}, "alerts": []})

    def start_from_gold(self, num_outputs: int) -> None:
        """Judge the coming checks against gold from the first one on: gold's own measurement at ``num_outputs``
        becomes the starting point. For data rather than a model that learns (an audit of a dataset), where
        there is no trajectory to wait for."""
        self.record_baseline(self.reference(num_outputs))

    def record_model_side(self, metrics: Mapping[str, float], step: int | None) -> None:
        """Keep a model-side measurement (gold perplexity and its bands, entropy, overconfidence) that another check
        took on the same gold texts, teacher-forced, at ``step``: later checks judge against the run's whole
        trajectory, not only the points this monitor measured itself (a full check every 100 steps would otherwise
        miss the best point a sentinel saw at step 30). Not a check: no verdict, no health, no patience."""
        self.model_side.append({"step": step, "metrics": dict(metrics), "raw": {}, "model_side": True})

    def _trajectory(self, checks: list[dict[str, Any]], step: int | None) -> list[dict[str, Any]]:
        """The judged checks with the model-side points between them, in step order (a point at this check's own
        step is this check's own measurement, taken once by the cheaper tier: left out)."""
        if not self.model_side or step is None:
            return checks
        own = {h.get("step") for h in checks}  # a step both tiers measured: this monitor's own check stands
        extra = [p for p in self.model_side if p["step"] is not None and p["step"] < step and p["step"] not in own]
        return sorted([*checks, *extra], key=lambda h: (h.get("step") is None, h.get("step") or 0))

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The judged checks of :attr:`history` (without the baseline)."""
        return [h for h in self.history if not h.get("baseline")]

    def judge(self, metrics: Mapping[str, float], step: int | None = None) -> CheckResult:
        """Judge one check's computed metrics (``num_outputs`` among them); appends to :attr:`history`."""
        metrics = dict(metrics)
        n = int(metrics["num_outputs"])
        reference = self.reference(n)
        checks = self._trajectory(self.checks, step)
        past = [h["metrics"] for h in checks]
        baseline = next((h["metrics"] for h in self.history if h.get("baseline")), None)
        profile = self.reference_profile.metrics if self.reference_profile is not None else None
        anchor = find_anchor(metrics, checks, baseline, profile, self.kind)
        # without gold, num_outputs counts the trainer's completions; a prompt's group shares that prompt's noise,
        # so the evidence the run's own start and small checks need is counted in groups
        per_prompt = self.samples_per_prompt if self.gold is None else 1
        findings = [f for d in self.detectors
                    for f in d.judge(metrics, reference, past, self.thresholds, self.kind, profile, anchor, baseline,
                                     per_prompt)]
        pending = [f for f in findings if f.pending]
        findings = [f for f in findings if not f.pending]
        judged = n >= self.thresholds.min_outputs
        if not judged:
            logger.warning("check at step %s had %d outputs, fewer than min_outputs=%d: reported, not judged",
                           step, n, self.thresholds.min_outputs)
        elif pending:
            logger.info("check at step %s: %s", step, "; ".join(f.message for f in pending))
        findings = self._corroborate(PolicyNarrowing.hold_back_learning(findings, self.thresholds))
        alerts = self._apply_patience(findings, step) if judged else []
        # a check that is not judged has no health: a 0 or a 1 would each claim a verdict nobody reached
        phase_health = {p: min([f.health for f in findings if f.phase == p], default=1.0) if judged else math.nan
                        for p in PHASES}
        bounds = {f.signal.metric: f.bounds() for f in findings}
        result = CheckResult(step, min(phase_health.values()) if judged else math.nan, phase_health, metrics,
                             reference, alerts, judged, bounds, _anchor_summary(anchor))
        previous = {tuple(a[k] for k in ("detector", "metric")): a["severity"]
                    for a in (self.history[-1]["alerts"] if self.history else [])}
        for alert in alerts:
            emit(alert, new=SEVERITY_RANK[alert.severity] > SEVERITY_RANK[previous.get(alert.key)])
        self.history.append({
            "step": step, "health": result.health, "phase_health": phase_health, "metrics": metrics,
            "raw": {f"{f.detector}/{f.signal.metric}": f.severity for f in findings} if judged else {},
            "alerts": [a.to_dict() for a in alerts], "anchor": result.anchor,
        })
        return result

    def _corroborate(self, findings: list[Finding]) -> list[Finding]:
        """Warns from ``corroboration`` or more different signals crossing their bounds at one check are critical:
        each alone may be noise, several kinds of evidence agreeing rarely are (on the healthy-training benchmark
        no check has two)."""
        need = self.thresholds.corroboration
        # trend warns do not count: several metrics drifting together is one drift (in one dimension, tail mass
        # and variance both follow the fit's variance), not independent evidence
        warns = [f for f in findings if f.severity == "warn" and not f.trend]
        if not need or len(warns) < need:
            return findings
        note = f" (critical: {len(warns)} signals warn at once, corroboration={need})"
        return [dataclasses.replace(f, severity="critical", message=f.message + note) if f in warns else f
                for f in findings]

    def _apply_patience(self, findings: list[Finding], step: int | None) -> list[Alert]:
        """Raise a finding's alert once it held ``patience`` consecutive checks (at its mildest severity)."""
        patience = self.thresholds.alert_patience
        alerts = []
        for f in findings:
            if f.severity is None:
                continue
            key = f"{f.detector}/{f.signal.metric}"
            earlier = [h["raw"].get(key) for h in self.history[len(self.history) - patience + 1:]]
            run = [*earlier, f.severity]
            if len(run) < patience or None in run:
                continue
            severity = min(run, key=SEVERITY_RANK.__getitem__)
            bound = f.signal.critical if severity == "critical" else f.signal.warn
            alerts.append(Alert(f.phase, severity, f.signal.metric, _finite(f.value), _finite(f.reference),
                                bound, f.message, f.detector, step))
        return alerts

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the history is all the detectors need to resume."""
        return {"version": STATE_VERSION, "fingerprint": self.gold.fingerprint if self.gold is not None else None,
                "thresholds": self.thresholds.to_dict(), "history": [dict(h) for h in self.history],
                "model_side": [dict(h) for h in self.model_side]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the history of :meth:`state_dict`.

        The monitor keeps the thresholds it was built with: the saved ones are not restored (they would silently
        override what the caller configured for this run). Where they differ, a warning on the ``collapseguard``
        logger names each field with its saved and current value.

        Raises:
            ValueError: another state version, or a state saved with another gold set.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"monitor state version {state.get('version')!r} is not {STATE_VERSION}")
        if state.get("fingerprint") != (self.gold.fingerprint if self.gold is not None else None):
            raise ValueError("this state was saved with another gold set (fingerprints differ); "
                             "resume with the same gold set or start a fresh monitor")
        saved = state.get("thresholds")
        if saved is not None:
            changed = _threshold_changes(saved, self.thresholds.to_dict())
            if changed:
                logger.warning("resumed monitor state was saved with other thresholds: %s; the current thresholds "
                               "are used (the saved ones are not restored)", "; ".join(changed))
        self.history = [dict(h) for h in state["history"]]
        self.model_side = [dict(h) for h in state.get("model_side", [])]


def _threshold_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"field saved -> current"`` for every threshold that differs, in field order; a field only one side has
    (a state from an older or newer version) shows as ``(none)`` on the other."""
    missing = object()
    changes = []
    for name in [*current, *(k for k in saved if k not in current)]:
        old, new = saved.get(name, missing), current.get(name, missing)
        if old != new:
            changes.append(f"{name} {'(none)' if old is missing else repr(old)} (saved) -> "
                           f"{'(none)' if new is missing else repr(new)} (current)")
    return changes


def _anchor_summary(anchor: Anchor | None) -> dict[str, Any]:
    if anchor is None:
        return {}
    return {"source": anchor.source, "step": anchor.step, "distance": anchor.distance, "value": anchor.value}


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else float("nan")
