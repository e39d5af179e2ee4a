"""The collapse detectors: TailLoss (early), VarianceShrinkage (mid), RepetitionLoop (late), and for several samples
per prompt and RL policies WithinPromptCollapse and EntropyCollapse (mid).

A detector is a list of :class:`Signal` s -- a metric, how it is judged
against its reference, and its warn/critical bounds -- plus the advice its
alerts give. Judging is pure: :meth:`Detector.judge` maps this check's
metrics, the gold reference and the run's history to :class:`Finding` s. The
monitor applies patience and turns findings into alerts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from collapseguard._validation import OneOf, message, validate
from collapseguard.detection.alerts import Phase, Severity
from collapseguard.detection.thresholds import Thresholds
from collapseguard.detection.trajectory import Anchor
from collapseguard.metrics.base import declaring_class, direction

Kind = Literal["ratio", "inverse_ratio", "excess", "rise", "log_rise"]
KINDS: dict[Kind, bool] = {"ratio": True, "inverse_ratio": False, "excess": False, "rise": False, "log_rise": False}
"""Each kind of score and the direction (``higher_is_better``) of the metrics it can judge: a ratio to the reference
judges a metric that falls as health falls, the others one that rises. The direction itself is the metric's
declaration (:func:`collapseguard.metrics.direction`); :class:`Signal` refuses a kind that contradicts it."""
_LOWER_IS_WORSE = ("ratio", "inverse_ratio")
"""The kinds whose *score* falls as health falls (``inverse_ratio`` is reference / value): how a score is read
against its bounds, not the metric's direction (that is :attr:`Signal.higher_is_better`)."""
_RISES = ("rise", "log_rise")


@dataclass(frozen=True)
class Signal:
    """How one metric is judged.

    ``ratio``: value / reference, bad when low. ``inverse_ratio``: reference / value
    (for metrics that rise as diversity falls). ``excess``: value - reference, bad
    when high. ``rise``: value / baseline, bad when high, where the baseline is the
    best value of the run or of the reference profile. ``log_rise``: the same for a
    log quantity (a negative log-likelihood): exp(value - baseline).
    """

    metric: str
    kind: Kind
    warn: float
    critical: float
    anchored: bool = False  # also judged against the run's best point (collapseguard.detection.trajectory), not gold alone
    from_start: bool = False  # a rise also counts from the model before training (the baseline check)
    own_start: int = 0  # no gold value: judged against the run's own start (its first own_start x min_outputs outputs)
    gold: bool = True  # gold's value is a measurement; False: a definition (overconfidence's 0), never a reference
    min_length: int = 0  # judged only where gold's continuations average this many tokens (bigrams need two)
    higher_is_better: bool = field(init=False, repr=False, compare=False)
    """The metric's declared direction (:func:`collapseguard.metrics.direction`); for a metric no metric class
    declares (a custom detector's), the direction its ``kind`` judges."""

    def __post_init__(self) -> None:
        validate("Signal", "kind", self.kind, OneOf(*KINDS))
        declared = direction(self.metric, default=KINDS[self.kind])
        if declared is None:
            raise ValueError(message("Signal", "metric", self.metric, "a metric with a direction",
                                     f"{declaring_class(self.metric).__name__} declares {self.metric} with "
                                     "higher_is_better=None: it is reported, not judged"))
        if declared is not KINDS[self.kind]:
            fits = [k for k, hib in KINDS.items() if hib is declared]
            validate("Signal", "kind", self.kind, OneOf(*fits),
                     fix=f"{declaring_class(self.metric).__name__} declares {self.metric} with higher_is_better="
                         f"{declared}; {self.kind!r} judges a metric where {'higher' if KINDS[self.kind] else 'lower'} "
                         "is better")
        object.__setattr__(self, "higher_is_better", declared)

    def score(self, value: float, reference: float) -> float:
        if value == math.inf and self.kind in (*_RISES, "excess") and math.isfinite(reference):
            return math.inf  # e.g. a gold sample the model deems impossible: beyond any bound
        if not (math.isfinite(value) and math.isfinite(reference)):
            return math.nan
        if self.kind == "ratio":
            return value / reference if reference > 0 else math.nan
        if self.kind == "inverse_ratio":
            return reference / value if value > 0 else math.nan
        if self.kind == "excess":
            return value - reference
        if self.kind == "log_rise":
            return math.exp(min(value - reference, 700.0))
        return value / reference if reference > 0 else math.nan

    def severity(self, score: float) -> Severity | None:
        if math.isnan(score):
            return None
        if self.kind in _LOWER_IS_WORSE:
            return "critical" if score < self.critical else "warn" if score < self.warn else None
        return "critical" if score > self.critical else "warn" if score > self.warn else None

    def health(self, score: float, reference: float) -> float:
        """1 at or better than the reference, 0.5 at the critical bound, 0 at total collapse."""
        if math.isnan(score):
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
    trend: bool = False  # a warn from a steady fall short of the bound, not from crossing it
    pending: bool = False  # not judged yet: the run's own start, its reference, is still forming

    def bounds(self) -> dict[str, float | str]:
        """The warn and critical bounds in the metric's own units at this check (for plots and trails), and
        ``direction``: on which side of them the metric's bad values lie (``"low"``: below, e.g. ``distinct_2``;
        ``"high"``: above, e.g. ``self_bleu`` and ``compression_ratio``).

        Multiplicative scores scale with the value, so the bound is the value at which the score
        would sit exactly on it, everything else held (this includes the tail/head adjustment).
        """
        sig = self.signal
        # "direction": the side of the bounds where the metric's bad values lie ("low": bad below, "high": bad
        # above), from the metric's declared direction -- not from the score, which for an inverse_ratio
        # (compression_ratio: reference / value) falls while the value rises past bounds above the reference
        out: dict[str, float | str] = {"reference": self.reference,
                                       "direction": "low" if sig.higher_is_better else "high"}
        for level in ("warn", "critical"):
            b = getattr(sig, level)
            if sig.kind == "excess":
                out[level] = self.reference + b
            elif sig.kind == "log_rise":
                out[level] = self.reference + math.log(b)
            elif not (math.isfinite(self.score) and self.score > 0 and b > 0):
                out[level] = math.nan
            elif sig.kind == "inverse_ratio":
                out[level] = self.value * self.score / b
            else:
                out[level] = self.value * b / self.score
        return out


class Detector:
    """Base detector: judge each of its signals, explain each finding."""

    name = "Detector"
    phase: Phase = "mid"
    advice: ClassVar[dict[str, str]] = {"text": "", "array": ""}  # what the alert says it means, by gold kind

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        raise NotImplementedError

    def judge(self, metrics: Mapping[str, float], reference: Mapping[str, float],
              history: Sequence[Mapping[str, float]], th: Thresholds, kind: str,
              profile: Mapping[str, float] | None = None, anchor: Anchor | None = None,
              baseline: Mapping[str, float] | None = None,
              per_prompt: int = 1) -> list[Finding]:
        """Findings for this check.

        ``reference`` holds gold's metrics, ``history`` earlier checks' metrics (oldest
        first), ``profile`` a trusted reference model's metrics (may be empty), ``anchor`` the
        run's point closest to the human data (:func:`~collapseguard.detection.trajectory.find_anchor`). Rises
        are measured from the best of the run and the profile; output-side signals are judged against
        the least demanding of gold, the profile and the anchor, so a model that is still learning
        (the anchor is the current check) is not judged on what it has not learned yet. ``baseline``
        holds the metrics of the model before training, a starting point for rises that declare
        ``from_start``. ``per_prompt``: the samples of one prompt in ``num_outputs`` (a monitor without gold
        counts GRPO's completions): they count as one output of evidence, since they share their prompt's noise.
        """
        profile = profile or {}
        findings = []

        needed = th.own_start_checks * th.min_outputs

        def size(point: Mapping[str, float]) -> float:
            return _size(point, per_prompt, needed)

        unit_word = "prompt groups" if per_prompt > 1 else "outputs"
        for sig in self.signals(th, kind, metrics):
            if sig.metric not in metrics or not self._enough_evidence(sig, reference, th):
                continue
            value = metrics[sig.metric]
            start = [baseline] if baseline is not None and (sig.from_start or sig.own_start) else []
            points = [h for h in (*start, *history) if math.isfinite(h.get(sig.metric, math.nan))]
            past = [h[sig.metric] for h in points]
            sizes = [size(h) for h in points]
            ref, source = self._reference(sig, value, past, reference, profile, anchor, baseline, sizes=sizes,
                                          needed=sig.own_start * th.min_outputs, unit_word=unit_word)
            if math.isnan(ref) and source.startswith("forming"):
                held = sum(sizes)
                findings.append(Finding(self.name, self.phase, sig, value, ref, math.nan, None, 1.0,
                                        f"{sig.metric} is not judged yet: the run's own start holds {held:.0f} of the "
                                        f"{sig.own_start * th.min_outputs} {unit_word} it needs (own_start_checks="
                                        f"{th.own_start_checks} x min_outputs={th.min_outputs})", pending=True))
                continue
            if math.isnan(value) or math.isnan(ref):
                continue  # undefined here (a within-prompt bigram metric of one-word answers): reported, not judged
            checks = [h for h in history if math.isfinite(h.get(sig.metric, math.nan))]
            pooled = ""
            if source.startswith("run's own start"):
                # a start of enough outputs is judged against a point of enough outputs: a small check is pooled
                # with the ones just before it (8 completions may hold one odd prompt of 2)
                value, count, n_now = _pool([*(h[sig.metric] for h in checks), value],
                                            [*(size(h) for h in checks), size(metrics)], needed)
                if count > 1:
                    pooled = f" (pooled over its last {count} checks, {n_now:.0f} {unit_word})"
            score = self._score(sig, value, ref, metrics, history, profile, anchor)
            severity = sig.severity(score)
            if sig.anchored and anchor is None and not history and baseline is None:
                # nothing to compare with (a bare monitor's first check): a deficit may be an unfinished or a
                # small model's as well as collapse; the next check tells which way the run goes
                severity = None
            trend = None
            if severity is None and score < 1:
                since = [h for h in self._since_anchor(history, anchor) if math.isfinite(h.get(sig.metric, math.nan))]
                found = self._trend_drop(sig, [*(h[sig.metric] for h in since), metrics[sig.metric]], th,
                                         [*(size(h) for h in since), size(metrics)], needed)
                trend, span = found if found is not None else (None, 0)
                if trend is not None and anchor is not None and not self._moving_away(since, metrics, anchor, th):
                    trend = None  # a steady fall counts only while the model also moves away from gold
            if trend is not None:
                severity = "warn"
            msg = self._message(sig, value, ref, source, score, severity, past, trend, metrics, history, profile,
                                th, reference, kind, anchor)
            if trend is not None and span > th.trend_window:
                msg = msg.replace(f"over the last {th.trend_window} checks",
                                  f"over the last {span} checks (pooled into {th.trend_window} points of {needed} "
                                  f"{unit_word} or more)", 1)
            if pooled:
                msg = msg.replace(f"{sig.metric} is {value:.4g}", f"{sig.metric} is {value:.4g}{pooled}", 1)
            findings.append(Finding(self.name, self.phase, sig, value, ref, score, severity,
                                    sig.health(score, ref), msg, trend is not None))
        return findings

    @staticmethod
    def _enough_evidence(sig: Signal, reference: Mapping[str, float], th: Thresholds) -> bool:
        """Tail coverage needs gold itself to cover ``min_tail_types`` rare types at this check size; a signal with a
        ``min_length`` needs gold's answers that long (one-token answers -- "5" to "What is 2+3?" -- hold no bigram
        to compare: reported, not judged, while duplicates and the within-prompt answers still are)."""
        covered = reference.get("tail_types_covered", math.inf) if sig.metric == "tail_coverage" else math.inf
        return covered >= th.min_tail_types and reference.get("mean_length", math.inf) >= sig.min_length

    @staticmethod
    def _moving_away(since: Sequence[Mapping[str, float]], metrics: Mapping[str, float], anchor: Anchor,
                     th: Thresholds) -> bool:
        """Whether the distance to gold rose at every check of the trend window (noise on a plateau does not)."""
        series = [h.get(anchor.distance, math.nan) for h in since[-(th.trend_window - 1):]]
        series.append(metrics.get(anchor.distance, math.nan))
        return len(series) >= 2 and all(math.isfinite(a) and math.isfinite(b) and b > a
                                        for a, b in itertools.pairwise(series))

    @staticmethod
    def _since_anchor(history: Sequence[Mapping[str, float]], anchor: Anchor | None) -> Sequence[Mapping[str, float]]:
        """The checks a steady fall is counted over: from the run's best point on (before it the model was
        still learning; at it, there is nothing to fall from yet)."""
        if anchor is None or anchor.source in ("profile", "baseline"):
            return history
        return [] if anchor.index is None else history[anchor.index:]

    @staticmethod
    def _reference(sig: Signal, value: float, past: list[float], gold: Mapping[str, float],
                   profile: Mapping[str, float], anchor: Anchor | None = None,
                   baseline: Mapping[str, float] | None = None, *, sizes: Sequence[float] = (),
                   needed: float = 0.0, unit_word: str = "outputs") -> tuple[float, str]:
        """(reference, how a message names it). ``sizes``: the outputs of each of ``past``; ``needed``: the outputs
        the run's own start must hold before it is a reference."""
        trusted = profile.get(sig.metric, math.nan)
        if sig.kind in _RISES:
            if sig.anchored and anchor is not None:
                # from the run's best point: a rise while the model still got closer to gold is how learning
                # looks (frequent tokens first), and before it the model had nothing to lose yet
                level = anchor.level(sig.metric, higher_is_worse=not sig.higher_is_better)
                past = [level] if math.isfinite(level) else past
            best = max if sig.higher_is_better else min  # the baseline is the best value (a rise: the lowest)
            return best(v for v in (*past, trusted, value) if math.isfinite(v)), "baseline"
        # a gold value that is a definition (overconfidence's 0: no pretrained model sits there) is no reference
        options = [(gold.get(sig.metric, math.nan) if sig.gold else math.nan, "gold reference"),
                   (trusted, "reference profile")]
        if sig.from_start and baseline is not None:  # what the model already was before training is not news
            options.append((baseline.get(sig.metric, math.nan), "level before training"))
        # the levels the run reached on its way to its best point relax the reference (not where this signal
        # alerted: a run that was collapsed on its way is still judged against gold)
        if sig.anchored and anchor is not None and anchor.source != "profile":
            options.append((anchor.level(sig.metric, higher_is_worse=not sig.higher_is_better), anchor.describe()))
        options = [(v, name) for v, name in options if math.isfinite(v)]
        measured = ("gold reference", "reference profile", "level before training")
        if sig.own_start and not any(name in measured for _, name in options):
            # nothing human to compare with (policy entropy; one response per gold prompt), or no start measured
            # before training: the run's own start, once its first checks hold enough outputs to be one (checks
            # before that are not judged on this signal: two checks of 8 are no start)
            count, n_start = _own_start(past, sizes, needed)
            if count:
                weights = [float(sizes[i]) if i < len(sizes) else float(needed) for i in range(count)]
                level = math.fsum(v * w for v, w in zip(past[:count], weights, strict=True)) / math.fsum(weights)
                which = "its first check" if count == 1 else f"mean of its first {count} checks"
                if baseline is not None and sig.metric in baseline:
                    which = "the check before training" if count == 1 else \
                        f"mean of the check before training and its first {count - 1} checks"
                options.append((level, f"run's own start ({which}, {n_start:.0f} {unit_word})"))
            elif not options:
                return math.nan, "forming"
        definition = gold.get(sig.metric, math.nan)
        if not sig.gold and options and math.isfinite(definition):
            # the definition is no reference alone (a pretrained model sits above overconfidence's 0 from its
            # start), but it bounds one: a start below it (an untrained model, unsure of everything) makes the
            # rise to it that learning brings look like news
            options.append((definition, "human text's own level"))
        if not options:
            return math.nan, "gold reference"
        # the least demanding reference: the lowest where higher is better, the highest where lower is
        return min(options, key=lambda o: o[0]) if sig.higher_is_better else max(options, key=lambda o: o[0])

    def _score(self, sig: Signal, value: float, ref: float, metrics: Mapping[str, float],
               history: Sequence[Mapping[str, float]], profile: Mapping[str, float],
               anchor: Anchor | None = None) -> float:
        return sig.score(value, ref)

    @staticmethod
    def _trend_drop(sig: Signal, series: list[float], th: Thresholds, sizes: Sequence[float] = (),
                    needed: float = 0.0) -> tuple[float, int] | None:
        """The drop over the trend window when it fell at every point by ``trend_drop_warn`` or more (metrics where
        higher is better: those a ratio judges), and the checks the window spans.

        A point holds ``needed`` outputs (``own_start_checks`` x ``min_outputs``; ``sizes``: each check's): a check
        that large is its own point, as always; smaller consecutive checks are pooled into one. Three checks of 8
        completions fall in a row by chance far more often than three of 64 (one odd prompt in a check of two is a
        fifth of its value), and a per-step schedule must not turn into more false warns than a coarser one.
        """
        if not sig.higher_is_better:
            return None
        points = _blocks(series, sizes, needed) if sizes else [(v, 1.0, 1) for v in series]
        window = points[-th.trend_window:]
        if len(window) < th.trend_window:
            return None
        first, last = window[0][0], window[-1][0]
        if first <= 0 or any(b[0] >= a[0] for a, b in itertools.pairwise(window)):
            return None
        drop = 1.0 - last / first
        return (drop, sum(w[2] for w in window)) if drop >= th.trend_drop_warn else None

    def _message(self, sig: Signal, value: float, ref: float, source: str, score: float,
                 severity: Severity | None, past: list[float], trend: float | None, metrics: Mapping[str, float],
                 history: Sequence[Mapping[str, float]], profile: Mapping[str, float], th: Thresholds,
                 reference: Mapping[str, float], kind: str = "text", anchor: Anchor | None = None) -> str:
        since = ""
        if past and past[0] != 0 and math.isfinite(past[0]):
            since = f"; {value / past[0] - 1:+.0%} since the first check"
        bound = sig.critical if severity == "critical" else sig.warn
        if trend is not None:
            head = (f"{sig.metric} fell {trend:.0%} over the last {th.trend_window} checks to {value:.4g} "
                    f"({score:.0%} of the {source} {ref:.4g}; the trend bound is a {th.trend_drop_warn:.0%} drop)")
        elif sig.kind == "ratio":
            head = (f"{sig.metric} is {value:.4g}, {score:.0%} of the {source} {ref:.4g} "
                    f"({severity or 'ok'} below {bound:.0%}{since})")
        elif sig.kind == "inverse_ratio":
            head = (f"{sig.metric} is {value:.4g} against the {source} {ref:.4g}: outputs are "
                    f"{1 / score if score > 0 else math.inf:.2f}x as compressible "
                    f"({severity or 'ok'} beyond {1 / bound:.2f}x{since})")
        elif sig.kind == "excess":
            head = (f"{sig.metric} is {value:.4g}, {score:+.3f} over the {source} {ref:.4g} "
                    f"({severity or 'ok'} above +{bound:g}{since})")
        elif sig.kind == "log_rise":
            head = (f"{sig.metric} is {value:.4g} nats per dimension, {value - ref:+.3f} over its baseline "
                    f"{ref:.4g} (the best of the run or of the reference profile: perplexity per dimension "
                    f"x{score:.2f}; {severity or 'ok'} at x{bound:g})")
        else:
            head = (f"{sig.metric} is {value:.4g}, {sig.score(value, ref):.2f}x its baseline {ref:.4g} (the best of the "
                    f"run or of the reference profile; {severity or 'ok'} at {bound:g}x)"
                    f"{self._rise_context(sig, metrics, history, profile, th, anchor)}")
        return f"{head}: {self.advice[kind]}{self._note(metrics, reference, th)}"

    def _rise_context(self, sig: Signal, metrics: Mapping[str, float], history: Sequence[Mapping[str, float]],
                      profile: Mapping[str, float], th: Thresholds, anchor: Anchor | None = None) -> str:
        return ""

    def _note(self, metrics: Mapping[str, float], reference: Mapping[str, float], th: Thresholds) -> str:
        return ""


def _size(point: Mapping[str, float], per_prompt: int, needed: float) -> float:
    """The evidence a check holds: ``num_outputs`` over ``per_prompt``. A point without a count (a caller's own
    metrics) is taken at its word, as holding ``needed``: the run's own start and a trend's point by itself."""
    n = point.get("num_outputs", math.nan)
    return float(n) / per_prompt if isinstance(n, int | float) and math.isfinite(n) and n > 0 else float(needed)


def _pool(values: Sequence[float], sizes: Sequence[float], needed: float) -> tuple[float, int, float]:
    """(mean, checks, outputs) of the latest checks that together hold ``needed`` outputs, weighted by outputs (the
    last check alone where it holds enough; all of them while they hold fewer)."""
    total, weighted, count = 0.0, 0.0, 0
    for i in range(len(values) - 1, -1, -1):
        total += sizes[i]
        weighted += values[i] * sizes[i]
        count += 1
        if total >= needed:
            break
    return (weighted / total if total else math.nan), count, total


def _blocks(values: Sequence[float], sizes: Sequence[float], needed: float) -> list[tuple[float, float, int]]:
    """(mean, outputs, checks) of the series cut into consecutive blocks of ``needed`` outputs or more, oldest
    first, counted back from the latest check (an incomplete oldest block is dropped): a check that large is a block
    of its own."""
    out, end = [], len(values)
    while end > 0:
        mean, count, total = _pool(values[:end], sizes[:end], needed)
        if total < needed:
            break
        out.append((mean, total, count))
        end -= count
    return out[::-1]


def _own_start(past: Sequence[float], sizes: Sequence[float], needed: float) -> tuple[int, float]:
    """(points, outputs) of the run's own start: its first points until they hold ``needed`` outputs; ``(0, 0.0)``
    while they hold fewer (the start is not formed yet). A point without a size (a caller that passes none) counts
    as ``needed``."""
    total = 0.0
    for i in range(len(past)):
        total += float(sizes[i]) if i < len(sizes) else float(needed)
        if total >= needed:
            return i + 1, total
    return 0, 0.0


class TailLoss(Detector):
    """Early phase: rare gold tokens stop appearing (outputs) or get less likely (model side)."""

    name = "TailLoss"
    phase: Phase = "early"
    advice: ClassVar[dict[str, str]] = {
        "text": "the model is losing the rare tokens of the human data; raise the share of human (anchor) data or "
                "cut synthetic data",
        "array": "samples no longer reach the tails of the human data; raise the share of real (anchor) data or "
                 "cut synthetic data"}

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        if kind == "array":
            return [Signal("tail_mass", "ratio", th.tail_coverage_warn, th.tail_coverage_critical, anchored=True)]
        return [
            Signal("tail_coverage", "ratio", th.tail_coverage_warn, th.tail_coverage_critical, anchored=True),
            Signal("gold_ppl_tail", "rise", th.tail_ppl_rise_warn, th.tail_ppl_rise_critical, anchored=True),
        ]

    def _score(self, sig: Signal, value: float, ref: float, metrics: Mapping[str, float],
               history: Sequence[Mapping[str, float]], profile: Mapping[str, float],
               anchor: Anchor | None = None) -> float:
        """Tail perplexity's rise beyond the head band's: a rise shared by all bands is not tail loss
        (VarianceShrinkage judges the overall ``gold_ppl`` for that)."""
        score = sig.score(value, ref)
        if sig.metric != "gold_ppl_tail":
            return score
        return score / max(self._head_rise(metrics, history, profile, anchor), 1.0)

    def _head_rise(self, metrics: Mapping[str, float], history: Sequence[Mapping[str, float]],
                   profile: Mapping[str, float], anchor: Anchor | None = None) -> float:
        """The head band's rise, measured from the same point as the tail's."""
        head = metrics.get("gold_ppl_head", math.nan)
        if not math.isfinite(head):
            return 1.0
        past = [h["gold_ppl_head"] for h in history if math.isfinite(h.get("gold_ppl_head", math.nan))]
        base, _ = self._reference(Signal("gold_ppl_head", "rise", 0, 0, anchored=True), head, past, {}, profile,
                                  anchor)
        return head / base if base > 0 else 1.0

    def _rise_context(self, sig: Signal, metrics: Mapping[str, float], history: Sequence[Mapping[str, float]],
                      profile: Mapping[str, float], th: Thresholds, anchor: Anchor | None = None) -> str:
        if sig.metric != "gold_ppl_tail" or not math.isfinite(metrics.get("gold_ppl_head", math.nan)):
            return ""
        rise = self._head_rise(metrics, history, profile, anchor)
        if rise <= th.head_ppl_tolerance:
            return f"; head-band perplexity held ({rise:.2f}x its baseline), so the loss is specific to rare tokens"
        return f"; head-band perplexity rose {rise:.2f}x too, and the tail rose faster than the head"


class VarianceShrinkage(Detector):
    """Mid phase: diversity of the outputs shrinks against gold, or the model's fit to all of gold worsens."""

    name = "VarianceShrinkage"
    phase: Phase = "mid"
    advice: ClassVar[dict[str, str]] = {
        "text": "outputs are narrowing toward generic text; mix in more human anchor data or roll back to an earlier "
                "checkpoint",
        "array": "samples are narrowing toward a few common modes; mix in more real anchor data or roll back to an "
                 "earlier checkpoint"}

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        lo, crit = th.diversity_warn, th.diversity_critical
        if kind == "array":
            return [*(Signal(m, "ratio", lo, crit, anchored=True) for m in ("vendi", "total_variance", "effective_rank")),
                    Signal("gold_nll", "log_rise", th.nll_rise_warn, th.nll_rise_critical, from_start=True)]
        return [
            Signal("gold_ppl", "rise", th.ppl_rise_warn, th.ppl_rise_critical, from_start=True),
            # gold's 0 is what a model writing like gold would score, not a measurement: a pretrained model starts
            # nats away on a new domain, so the level before training, else the run's own start, is the reference
            Signal("overconfidence", "excess", th.overconfidence_warn, th.overconfidence_critical, from_start=True,
                   own_start=th.own_start_checks, gold=False),
            Signal("distinct_2", "ratio", lo, crit, anchored=True, min_length=2),
            Signal("vendi", "ratio", lo, crit, anchored=True),
            Signal("compression_ratio", "inverse_ratio", lo, crit, anchored=True),
            Signal("self_bleu", "excess", th.self_bleu_rise_warn, th.self_bleu_rise_critical, anchored=True),
        ]


class RepetitionLoop(Detector):
    """Late phase: loops inside outputs, the same output for every prompt."""

    name = "RepetitionLoop"
    phase: Phase = "late"
    advice: ClassVar[dict[str, str]] = {
        "text": "outputs degenerate into repetition; stop and roll back to the last healthy checkpoint",
        "array": "samples degenerate (identical samples, or samples far outside the real data); stop and roll back "
                 "to the last healthy checkpoint"}

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        names = ("duplicate_fraction", "far_mass") if kind == "array" else \
            ("seq_rep_4", "loop_fraction", "duplicate_fraction")
        return [Signal(m, "excess", th.repetition_warn, th.repetition_critical) for m in names]

    def _note(self, metrics: Mapping[str, float], reference: Mapping[str, float], th: Thresholds) -> str:
        share = metrics.get("length_limit_fraction", math.nan)
        gold_share = reference.get("length_limit_fraction", math.nan)
        # only where gold itself ends within the limit: gold documents longer than max_new_tokens run to the
        # limit too, and outputs that do the same are healthy
        if not (math.isfinite(share) and share >= th.length_limit_note
                and math.isfinite(gold_share) and gold_share < th.length_limit_note):
            return ""
        return (f" ({share:.0%} of outputs hit the length limit without EOS: if that was so from the first check, "
                "suspect a setup fault -- EOS masked out of the loss, or pad token equal to EOS -- rather than collapse)")


class WithinPromptCollapse(Detector):
    """Mid phase: the k samples of one prompt converge on the same answer (``samples_per_prompt > 1``, GRPO groups).

    Judged against gold's within-prompt reference (k human responses per prompt) where gold has one, else against
    the run's own start; the diversity across prompts (VarianceShrinkage) cannot see a model that answers each
    prompt in one fixed way."""

    name = "WithinPromptCollapse"
    phase: Phase = "mid"
    advice: ClassVar[dict[str, str]] = {
        "text": "the samples of each prompt converge on one answer (their words overlap more and more); keep exploration: an "
                "entropy bonus (GRPOConfig(entropy_coef=...)), a diversity-preserving reward, a higher sampling "
                "temperature or a KL penalty (beta), or roll back to an earlier checkpoint", "array": ""}

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        if kind != "text":
            return []
        n = th.own_start_checks
        return [
            Signal("distinct_k", "ratio", th.distinct_k_warn, th.distinct_k_critical, anchored=True, own_start=n),
            Signal("within_distinct_2", "ratio", th.diversity_warn, th.diversity_critical, anchored=True,
                   own_start=n),
            Signal("within_similarity", "excess", th.within_similarity_warn, th.within_similarity_critical,
                   anchored=True, own_start=n),
        ]

    def _note(self, metrics: Mapping[str, float], reference: Mapping[str, float], th: Thresholds) -> str:
        return _zero_std_note(metrics)


def _zero_std_note(metrics: Mapping[str, float]) -> str:
    """TRL's ``frac_reward_zero_std`` as context: reported, never judged alone (a policy too random to earn any
    reward has equal rewards in its groups too, and that is no collapse)."""
    share = metrics.get("frac_reward_zero_std", math.nan)
    if not math.isfinite(share) or share < 0.5:
        return ""
    return f" ({share:.0%} of prompt groups had equal rewards: GRPO gets no learning signal from them)"


class EntropyCollapse(Detector):
    """Mid phase: an RL policy's entropy collapses (Cui et al., 2025: once it nears 0 the attainable score is set).
    Judged against the run's own start; TRL's ``frac_reward_zero_std`` is added to its message as context."""

    name = "EntropyCollapse"
    phase: Phase = "mid"
    advice: ClassVar[dict[str, str]] = {
        "text": "the policy's entropy is collapsing: it is turning deterministic and stops exploring; add an entropy "
                "bonus (GRPOConfig(entropy_coef=...) or use_adaptive_entropy=True), raise epsilon_high (clip-higher), "
                "add a KL penalty (beta) or lower the learning rate", "array": ""}

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        if kind != "text":
            return []
        n = th.own_start_checks
        return [Signal("policy_entropy", "ratio", th.entropy_warn, th.entropy_critical, own_start=n)]

    def _note(self, metrics: Mapping[str, float], reference: Mapping[str, float], th: Thresholds) -> str:
        return _zero_std_note(metrics)


class PolicyNarrowing(Detector):
    """Mid phase, RL with verifiable rewards: the policy narrows instead of learning. pass@k at the group size falls
    from the run's best while pass@1 holds or rises (Yue et al., 2025): the answers the policy stopped sampling were
    sometimes the right ones. And the mixed groups, the only ones GRPO learns from, thin out while all-correct groups
    pile up. Judged only where each sample was judged right or wrong (``correct=``).

    Each point pools consecutive checks to ``own_start_checks x min_outputs`` groups (a check of 16 prompts measures
    pass@k to about +-0.1). A fall counts where *both* of the two latest points lie beyond the bound and two standard
    errors below the best earlier point: the best of many noisy points is itself lucky, and one unlucky point is
    noise.
    """

    name = "PolicyNarrowing"
    phase: Phase = "mid"
    advice: ClassVar[dict[str, str]] = {
        "text": "the policy narrows: it concentrates on fewer answers and stops sampling ones that were sometimes right; "
                "check the reward first: a term that pays a style whether or not the answer is right (length, "
                "format) narrows the policy onto that style, and no exploration bonus undoes it; otherwise keep "
                "exploration: an entropy bonus (GRPOConfig(use_adaptive_entropy=True, entropy_target=...)), "
                "clip-higher (epsilon_high), a KL penalty (beta) or a lower learning rate, or roll back to the last "
                "good checkpoint", "array": ""}
    # (signal's metric, what must hold meanwhile, and which way: pass@1 must not fall; all-correct groups must rise)
    _CONDITION: ClassVar[dict[str, tuple[str, str]]] = {"pass_at_k": ("pass_at_1", "held"),
                                                        "frac_mixed": ("frac_all_correct", "rose")}
    CONVERGING: ClassVar[tuple[str, ...]] = ("WithinPromptCollapse", "EntropyCollapse")
    """The detectors whose findings, with correctness judged, only corroborate this one: a policy whose pass@k holds
    while its groups converge and its entropy falls is converging on right answers, which is learning
    (:meth:`hold_back_learning`)."""

    def signals(self, th: Thresholds, kind: str, metrics: Mapping[str, float]) -> list[Signal]:
        if kind != "text":
            return []
        return [Signal("pass_at_k", "ratio", th.pass_at_k_warn, th.pass_at_k_critical),
                Signal("frac_mixed", "ratio", th.mixed_groups_warn, th.mixed_groups_critical)]

    def judge(self, metrics: Mapping[str, float], reference: Mapping[str, float],
              history: Sequence[Mapping[str, float]], th: Thresholds, kind: str,
              profile: Mapping[str, float] | None = None, anchor: Anchor | None = None,
              baseline: Mapping[str, float] | None = None, per_prompt: int = 1) -> list[Finding]:
        if not math.isfinite(metrics.get("pass_at_k", math.nan)) or not metrics.get("num_groups"):
            return []
        needed = float(th.own_start_checks * th.min_outputs)
        points = [h for h in history if math.isfinite(h.get("pass_at_k", math.nan)) and h.get("num_groups")]
        points.append(metrics)
        sizes = [float(h["num_groups"]) for h in points]
        findings = []
        for sig in self.signals(th, kind, metrics):
            other, how = self._CONDITION[sig.metric]
            blocks = {m: _blocks([h.get(m, math.nan) for h in points], sizes, needed) for m in (sig.metric, other)}
            if len(blocks[sig.metric]) < 3:
                findings.append(Finding(self.name, self.phase, sig, metrics[sig.metric], math.nan, math.nan, None, 1.0,
                                        f"{sig.metric} is not judged yet: it needs three points of {needed:.0f} groups "
                                        "(own_start_checks x min_outputs): the run's best, and the two latest",
                                        pending=True))
                continue
            past, recent = blocks[sig.metric][:-2], blocks[sig.metric][-2:]
            best_i = max(range(len(past)), key=lambda i: past[i][0])
            best, best_groups, _ = past[best_i]
            # the less extreme of the two latest points: a narrowing holds at both, one unlucky point is noise
            now, groups, _ = max(recent, key=lambda b: b[0])
            score = sig.score(now, best)
            z = _two_point_z(best, best_groups, now, groups)
            other_best = blocks[other][best_i][0]
            other_now = math.fsum(v * n for v, n, _ in blocks[other][-2:]) / math.fsum(n for _, n, _ in blocks[other][-2:])
            recent_groups, extra = sum(n for _, n, _ in recent), ""
            if how == "held":
                # held: not even one standard error lower (a pass@1 that falls too is a policy getting worse, which
                # the other signals judge; this one is the narrowing signature)
                meanwhile = other_ok = _two_point_z(other_best, best_groups, other_now, recent_groups) < 1
            else:
                # all-correct groups pile up and so do all-wrong ones (by a standard error or more): the groups
                # polarise. A policy that learns empties the all-wrong groups, or leaves them as few as they were.
                # (against every earlier point pooled: all-wrong groups are rare, and one point of them is noisy)
                wrong = _blocks([h.get("frac_all_wrong", math.nan) for h in points], sizes, needed)
                wrong_groups = math.fsum(n for _, n, _ in wrong[:-2])
                wrong_best = (math.fsum(v * n for v, n, _ in wrong[:-2]) / wrong_groups if len(wrong) >= 3
                              else math.nan)
                wrong_now = (math.fsum(v * n for v, n, _ in wrong[-2:]) / math.fsum(n for _, n, _ in wrong[-2:])
                             if len(wrong) >= 3 else math.nan)
                wrong_rose = _two_point_z(wrong_now, recent_groups, wrong_best, wrong_groups) >= 1
                other_ok = other_now > other_best
                meanwhile = other_ok and wrong_rose
                extra = (f" and frac_all_wrong {'rose' if wrong_rose else 'did not rise'} "
                         f"({wrong_best:.3g} -> {wrong_now:.3g})") if math.isfinite(wrong_now) else ""
            severity = sig.severity(score) if z >= 2 and meanwhile else None
            msg = (f"{sig.metric} is {now:.3g} or less at each of the last two points ({groups:.0f}+ groups each), "
                   f"{score:.0%} of the run's best {best:.3g} (warn below {sig.warn:.0%}; {z:.1f} standard errors), "
                   f"while {other} {how if other_ok else 'did not ' + how.replace('held', 'hold').replace('rose', 'rise')} "
                   f"({other_best:.3g} -> {other_now:.3g}){extra}")
            if severity is not None:
                msg += f": {self.advice['text']}"
            findings.append(Finding(self.name, self.phase, sig, now, best, score, severity,
                                    sig.health(score, best) if severity else 1.0, msg))
        return findings

    @classmethod
    def hold_back_learning(cls, findings: Sequence[Finding], th: Thresholds) -> list[Finding]:
        """With correctness judged and pass@k holding (within ``pass_at_k_warn`` of the run's best), the converging
        groups and falling entropy that :attr:`CONVERGING` detectors flag are the policy settling on right answers:
        their warns are held back (reported in the message, health 1). They count again once pass@k falls."""
        passk = next((f for f in findings if f.detector == cls.name and f.signal.metric == "pass_at_k"
                      and not f.pending), None)
        if passk is None or not math.isfinite(passk.score) or passk.score < th.pass_at_k_warn:
            return list(findings)
        note = (f" (held back: pass@k holds at {passk.score:.0%} of the run's best, so the groups converge on right "
                "answers: learning, not collapse)")
        return [dataclasses.replace(f, severity=None, health=1.0, message=f.message + note)
                if f.detector in cls.CONVERGING and f.severity is not None else f for f in findings]


def _two_point_z(before: float, n_before: float, after: float, n_after: float) -> float:
    """How many standard errors ``after`` lies below ``before``: shares of ``n_before`` and ``n_after`` groups, each
    group's value in [0, 1] (so a pooled p(1 - p) bounds the variance, as in a two-proportion test; a point of 1.0
    does not make the error vanish)."""
    pooled = (before * n_before + after * n_after) / (n_before + n_after)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_before + 1 / n_after))
    return (before - after) / se


DEFAULT_DETECTORS: tuple[type[Detector], ...] = (TailLoss, VarianceShrinkage, RepetitionLoop, WithinPromptCollapse,
                                                 EntropyCollapse, PolicyNarrowing)
