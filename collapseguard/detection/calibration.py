"""Calibrate thresholds for a new domain from the gold set's own split-half variation.

How far can human text sit from a human reference by chance? Split the gold set
in two at random, judge one half's continuations against the other half as the
guard judges a model's outputs, repeat: the spread of each detector score over
the rounds is the noise floor of that domain at that check size. Bounds set
just beyond it alarm rarely on human-like outputs and still early on collapse.
Model-side bounds (perplexity rises) need a model and keep their defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.detection.alerts import logger, silenced_alerts
from collapseguard.detection.monitor import CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.metrics import direction

# which Thresholds fields each output metric's signal uses, and how its score is read (a ratio of a metric
# declared lower-is-better, compression_ratio, is read inverted: reference / value)
_FIELDS = {
    "tail_coverage": ("tail_coverage", "ratio"), "tail_mass": ("tail_coverage", "ratio"),
    "distinct_2": ("diversity", "ratio"), "vendi": ("diversity", "ratio"),
    "compression_ratio": ("diversity", "ratio"), "total_variance": ("diversity", "ratio"),
    "effective_rank": ("diversity", "ratio"), "self_bleu": ("self_bleu_rise", "excess"),
    "seq_rep_4": ("repetition", "excess"), "loop_fraction": ("repetition", "excess"),
    "duplicate_fraction": ("repetition", "excess"),
}


@dataclass
class Calibration:
    """Split-half scores per metric and the thresholds they suggest.

    Attributes:
        scores: metric -> detector score of each round (ratio to reference, or excess over it).
        thresholds: the suggested :class:`Thresholds` (``base`` with output-side bounds moved).
        quantile: the tail quantile the warn bounds were set at.
        texts: gold items the calibration split (the gold set's size).
        prompts: outputs judged per round (a round's reference is half the gold set, so at most half of what
            the guard's checks judge).
        guard_prompts: prompts a check of the guard judges on the whole gold set at these settings: fewer than
            ``num_samples`` when the gold set yields fewer.
        notes: fields calibration left at the base preset because the gold set is too small to estimate them,
            each with the number of gold texts it would need.
    """

    scores: dict[str, list[float]]
    thresholds: Thresholds
    quantile: float
    texts: int = 0
    prompts: int = 0
    guard_prompts: int = 0
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, float, float, float]]:
        """(metric, kind, median, the quantile's value, the worst round) for each metric."""
        out = []
        for metric, vals in sorted(self.scores.items()):
            kind = _FIELDS[metric][1]
            q = self.quantile if kind == "ratio" else 1 - self.quantile
            worst = min(vals) if kind == "ratio" else max(vals)
            out.append((metric, kind, float(np.median(vals)), float(np.quantile(vals, q)), worst))
        return out


def calibrate(gold: GoldSet, *, tokenizer: Any = None, num_samples: int = 64, prompt_length: int = 16,
              max_new_tokens: int = 32, rounds: int = 20, quantile: float = 0.02, margin: float = 0.05,
              base: Thresholds | str | dict | None = None, seed: int = 0) -> Calibration:
    """Measure split-half noise and suggest warn bounds just beyond it.

    Each round shuffles gold, builds a guard reference from one half and judges ``num_samples``
    continuations of the other half. A ratio's warn bound becomes the ``quantile`` of its scores
    minus ``margin`` (an excess's: the ``1 - quantile`` quantile plus ``margin``), taken over the
    metrics that share a field, and never less demanding than needed to stay above the critical
    bound (critical bounds move only when a warn bound would cross them).

    Raises:
        ValueError: a gold set too small to split, or a bad setting (named).
    """
    validate("calibrate", "quantile", quantile, Interval(float, 0, 0.5, closed="neither"),
             fix="it is the tail share of human-vs-human checks allowed to warn (0.02 by default)",
             type_error=ArgumentTypeError)
    validate("calibrate", "rounds", rounds, Interval(int, 5, None), fix="estimating a spread takes at least 5 rounds",
             type_error=ArgumentTypeError)
    base_th = Thresholds.coerce(base)
    # calibration reads the metrics of each half, never a verdict: a half too small to judge min_outputs is still
    # measured (a CollapseMonitor refuses a gold set that could never be judged)
    measure_th = base_th.replace(min_outputs=2)
    rng = np.random.default_rng(seed)
    n = len(gold)
    if n < 16:
        raise ValueError(f"calibrate: the gold set has {n} items; calibration needs at least 16 to split in halves: "
                         "use a larger gold set")
    scores: dict[str, list[float]] = {}
    prompts = 0
    with silenced_alerts():
        for _ in range(rounds):
            order = rng.permutation(n)
            half_a, half_b = order[: n // 2], order[n // 2:]
            if gold.kind == "text":
                ref = GoldSet.from_texts([gold.texts[i] for i in half_b])
                judge = CollapseMonitor(ref, measure_th, tokenizer=tokenizer, prompt_length=prompt_length,
                                        max_new_tokens=max_new_tokens)
                probe = GoldSet.from_texts([gold.texts[i] for i in half_a])
                cont = probe.split(judge.tokenizer, prompt_length, max_new_tokens).continuations
                # as many outputs as the guard would judge against this reference
                outputs: Any = list(cont[:min(num_samples, len(judge.split))])
            else:
                judge = CollapseMonitor(GoldSet.from_arrays(gold.array[half_b]), measure_th)
                outputs = gold.array[half_a][:num_samples]
            prompts = max(prompts, len(outputs))
            result = judge.check(outputs)
            for metric, (_, kind) in _FIELDS.items():
                if metric in result.metrics and metric in result.reference:
                    value, ref_value = result.metrics[metric], result.reference[metric]
                    if kind == "ratio" and not direction(metric):  # judged inversely: more compressible is worse
                        value, ref_value = 1 / value, 1 / ref_value
                    score = value / ref_value if kind == "ratio" and ref_value > 0 else value - ref_value
                    if math.isfinite(score):
                        scores.setdefault(metric, []).append(score)
    thresholds, notes = _suggest(scores, base_th, quantile, margin, n)
    for note in notes:
        logger.warning("calibrate: %s", note)
    if gold.kind == "text":
        guard_prompts = min(num_samples, len(CollapseMonitor(gold, measure_th, tokenizer=tokenizer,
                                                             prompt_length=prompt_length,
                                                             max_new_tokens=max_new_tokens).split))
    else:
        guard_prompts = num_samples
    return Calibration(scores, thresholds, quantile, n, prompts, guard_prompts, notes)


def _suggest(scores: dict[str, list[float]], base: Thresholds, quantile: float, margin: float,
             texts: int) -> tuple[Thresholds, list[str]]:
    """The calibrated thresholds, and a note for each field left at ``base`` because its split-half spread
    reaches past the base critical bound: a warn bound beyond that spread would switch the signal off.

    Split-half spreads shrink as one over the square root of the gold set's size, which gives the number
    of texts at which the spread would leave room for a warn bound above (below) the critical one.
    """
    changes: dict[str, float] = {}
    notes: list[str] = []
    for field_name in sorted({f for f, _ in _FIELDS.values()}):
        metrics = [m for m, (f, _) in _FIELDS.items() if f == field_name and m in scores]
        if not metrics:
            continue
        kind = _FIELDS[metrics[0]][1]
        warn_key, crit_key = f"{field_name}_warn", f"{field_name}_critical"
        crit = getattr(base, crit_key)
        if kind == "ratio":
            tail = min(float(np.quantile(scores[m], quantile)) for m in metrics)
            spread, room = 1.0 - tail, 1.0 - crit - margin  # how far human text falls, how far it may
            warn = round(min(max(tail - margin, 0.05), 0.99), 2)
            fits = warn > crit
        else:
            tail = max(float(np.quantile(scores[m], 1 - quantile)) for m in metrics)
            spread, room = max(tail, 0.0), crit - margin
            warn = round(min(max(tail + margin, 0.01), 0.95), 2)
            fits = warn < crit
        if not fits:
            needed = math.ceil(texts * (spread / room) ** 2) if room > 0 else None
            notes.append(
                f"{', '.join(metrics)}: on {texts} gold texts human text itself reaches {tail:.2f} in "
                f"{quantile:.0%} of split-half rounds, beyond the {crit_key}={crit} bound, so a calibrated bound "
                f"would never fire; {warn_key} and {crit_key} keep the base values "
                f"{getattr(base, warn_key)} / {crit}" +
                (f" (calibrating them needs about {needed} gold texts)" if needed else ""))
            continue
        changes[warn_key] = warn
    return base.replace(**changes), notes
