"""The three collapse detectors: TailLoss (early), VarianceShrinkage (mid), RepetitionLoop (late).

A detector is a list of :class:`Signal` s -- a metric, how it is judged
against its reference, and its warn/critical bounds -- plus the advice its
alerts give. Judging is pure: :meth:`Detector.judge` maps this check's
metrics, the gold reference and the run's history to :class:`Finding` s. The
monitor applies patience and turns findings into alerts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from collapseguard.alerts import Phase, Severity
from collapseguard.thresholds import Thresholds

Kind = Literal["ratio", "inverse_ratio", "excess", "rise"]
_LOWER_IS_WORSE = ("ratio", "inverse_ratio")


@dataclass(frozen=True)
class Signal:
    """How one metric is judged.

    ``ratio``: value / reference, bad when low. ``inverse_ratio``: reference / value
    (for metrics that rise as diversity falls). ``excess``: value - reference, bad
    when high. ``rise``: value / best value so far in the run, bad when high.
    """

    metric: str
    kind: Kind
    warn: float
    critical: float

    def score(self, value: float, reference: float) -> float:
        if not (math.isfinite(value) and math.isfinite(reference)):
            return math.nan
        if self.kind == "ratio":
            return value / reference if reference > 0 else math.nan
        if self.kind == "inverse_ratio":
            return reference / value if value > 0 else math.nan
        if self.kind == "excess":
            return value - reference
        return value / reference if reference > 0 else math.nan

    def severity(self, score: float) -> Severity | None:
        if not math.isfinite(score):
            return None
        if self.kind in _LOWER_IS_WORSE:
            return "critical" if score < self.critical else "warn" if score < self.warn else None
        return "critical" if score > self.critical else "warn" if score > self.warn else None

    def health(self, score: float, reference: float) -> float:
        """1 at or better than the reference, 0.5 at the critical bound, 0 at total collapse."""
        if not math.isfinite(score):
            return 1.0
        if self.kind in _LOWER_IS_WORSE:
            if score >= 1.0:
                return 1.0
            if score >= self.critical:
                return 0.5 + 0.5 * (score - self.critical) / (1.0 - self.critical)
            return max(0.0, 0.5 * score / self.critical) if self.critical > 0 else 0.0
        base = 0.0 if self.kind == "excess" else 1.0
        if score <= base:
            return 1.0
        if score <= self.critical:
            return 1.0 - 0.5 * (score - base) / (self.critical - base)
        if self.kind == "excess":
            room = max(1.0 - reference - self.critical, 1e-12)  # value cannot exceed 1
            return max(0.0, 0.5 * (1.0 - (score - self.critical) / room))
        return 0.5 * self.critical / score


@dataclass(frozen=True)
class Finding:
    """A signal's verdict at one check, before patience."""

    detector: str
    phase: Phase
    signal: Signal
    value: float
    reference: float
    score: float
    severity: Severity | None
    health: float
    message: str


class Detector:
    """Base detector: judge each of its signals, explain each finding."""

    name = "Detector"
    phase: Phase = "mid"
    advice = ""

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        raise NotImplementedError

    def judge(self, metrics: Mapping[str, float], reference: Mapping[str, float],
              history: Sequence[Mapping[str, float]], th: Thresholds, kind: str) -> list[Finding]:
        """Findings for this check. ``history`` holds earlier checks' metrics, oldest first."""
        findings = []
        for sig in self.signals(th, kind, metrics):
            if sig.metric not in metrics:
                continue
            value = metrics[sig.metric]
            past = [h[sig.metric] for h in history if math.isfinite(h.get(sig.metric, math.nan))]
            ref = min([*past, value]) if sig.kind == "rise" else reference.get(sig.metric, math.nan)
            score = sig.score(value, ref)
            severity = sig.severity(score)
            trend = self._trend_drop(sig, [*past, value], th) if severity is None and score < 1 else None
            if trend is not None:
                severity = "warn"
            msg = self._message(sig, value, ref, score, severity, past, trend, metrics, history, th)
            findings.append(Finding(self.name, self.phase, sig, value, ref, score, severity,
                                    sig.health(score, ref), msg))
        return findings

    @staticmethod
    def _trend_drop(sig: Signal, series: list[float], th: Thresholds) -> float | None:
        """The drop over the trend window when it fell at every check by ``trend_drop_warn`` or more."""
        if sig.kind != "ratio" or len(series) < th.trend_window:
            return None
        window = series[-th.trend_window:]
        if window[0] <= 0 or any(b >= a for a, b in itertools.pairwise(window)):
            return None
        drop = 1.0 - window[-1] / window[0]
        return drop if drop >= th.trend_drop_warn else None

    def _message(self, sig: Signal, value: float, ref: float, score: float, severity: Severity | None,
                 past: list[float], trend: float | None, metrics: Mapping[str, float],
                 history: Sequence[Mapping[str, float]], th: Thresholds) -> str:
        since = ""
        if past and past[0] != 0 and math.isfinite(past[0]):
            since = f"; {value / past[0] - 1:+.0%} since the first check"
        bound = sig.critical if severity == "critical" else sig.warn
        if trend is not None:
            head = (f"{sig.metric} fell {trend:.0%} over the last {th.trend_window} checks to {value:.4g} "
                    f"({score:.0%} of the gold reference {ref:.4g}; the trend bound is a {th.trend_drop_warn:.0%} drop)")
        elif sig.kind == "ratio":
            head = (f"{sig.metric} is {value:.4g}, {score:.0%} of the gold reference {ref:.4g} "
                    f"({severity or 'ok'} below {bound:.0%}{since})")
        elif sig.kind == "inverse_ratio":
            head = (f"{sig.metric} is {value:.4g} against the gold reference {ref:.4g}: outputs are "
                    f"{1 / score if score > 0 else math.inf:.2f}x as compressible as gold "
                    f"({severity or 'ok'} beyond {1 / bound:.2f}x{since})")
        elif sig.kind == "excess":
            head = (f"{sig.metric} is {value:.4g}, {score:+.3f} over the gold reference {ref:.4g} "
                    f"({severity or 'ok'} above +{bound:g}{since})")
        else:
            head = (f"{sig.metric} is {value:.4g}, {score:.2f}x its best value of the run {ref:.4g} "
                    f"({severity or 'ok'} at {bound:g}x){self._rise_context(metrics, history, th)}")
        return f"{head}: {self.advice}{self._note(metrics, th)}"

    def _rise_context(self, metrics: Mapping[str, float], history: Sequence[Mapping[str, float]],
                      th: Thresholds) -> str:
        return ""

    def _note(self, metrics: Mapping[str, float], th: Thresholds) -> str:
        return ""


class TailLoss(Detector):
    """Early phase: rare gold tokens stop appearing (outputs) or get less likely (model side)."""

    name = "TailLoss"
    phase: Phase = "early"
    advice = "the model is losing the rare tokens of the human data; raise the share of human (anchor) data or cut synthetic data"

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        if kind == "array":
            return [Signal("tail_mass", "ratio", th.tail_coverage_warn, th.tail_coverage_critical)]
        return [
            Signal("tail_coverage", "ratio", th.tail_coverage_warn, th.tail_coverage_critical),
            Signal("gold_ppl_tail", "rise", th.tail_ppl_rise_warn, th.tail_ppl_rise_critical),
        ]

    def _rise_context(self, metrics: Mapping[str, float], history: Sequence[Mapping[str, float]],
                      th: Thresholds) -> str:
        heads = [h["gold_ppl_head"] for h in history if math.isfinite(h.get("gold_ppl_head", math.nan))]
        head = metrics.get("gold_ppl_head", math.nan)
        if not heads or not math.isfinite(head):
            return ""
        head_rise = head / min([*heads, head])
        if head_rise <= th.head_ppl_tolerance:
            return f"; head-band perplexity held at {head_rise:.2f}x its best, so the loss is specific to rare tokens"
        return f"; head-band perplexity rose too ({head_rise:.2f}x its best): the fit to gold worsens across all bands"


class VarianceShrinkage(Detector):
    """Mid phase: diversity of the outputs shrinks against gold."""

    name = "VarianceShrinkage"
    phase: Phase = "mid"
    advice = "outputs are narrowing toward generic text; mix in more human anchor data or roll back to an earlier checkpoint"

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        lo, crit = th.diversity_warn, th.diversity_critical
        if kind == "array":
            return [Signal(m, "ratio", lo, crit) for m in ("vendi", "total_variance", "effective_rank")]
        return [
            Signal("distinct_2", "ratio", lo, crit),
            Signal("vendi", "ratio", lo, crit),
            Signal("compression_ratio", "inverse_ratio", lo, crit),
            Signal("self_bleu", "excess", th.self_bleu_rise_warn, th.self_bleu_rise_critical),
        ]


class RepetitionLoop(Detector):
    """Late phase: loops inside outputs, the same output for every prompt."""

    name = "RepetitionLoop"
    phase: Phase = "late"
    advice = "outputs degenerate into repetition; stop and roll back to the last healthy checkpoint"

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        names = ("duplicate_fraction",) if kind == "array" else ("seq_rep_4", "loop_fraction", "duplicate_fraction")
        return [Signal(m, "excess", th.repetition_warn, th.repetition_critical) for m in names]

    def _note(self, metrics: Mapping[str, float], th: Thresholds) -> str:
        share = metrics.get("length_limit_fraction", math.nan)
        if not (math.isfinite(share) and share >= th.length_limit_note):
            return ""
        return (f" ({share:.0%} of outputs hit the length limit without EOS: if that was so from the first check, "
                "suspect a setup fault -- EOS masked out of the loss, or pad token equal to EOS -- rather than collapse)")


DEFAULT_DETECTORS: tuple[type[Detector], ...] = (TailLoss, VarianceShrinkage, RepetitionLoop)
