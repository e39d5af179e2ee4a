"""The run's best point: what output-side signals are judged against while a model is still learning.

Output-side signals (tail coverage, distinct-2, Vendi, compressibility, self-BLEU; for arrays Vendi, total
variance, effective rank, tail mass) compare what the model produces with what humans wrote. A model that is
still learning sits away from gold on them for reasons that have nothing to do with collapse: a barely
trained model emits near-random tokens, which hit many rare gold types, and as it learns it concentrates on
frequent tokens first, so its tail coverage *falls while it improves*; a small model never reaches gold's
diversity at all. Judged against gold alone, those runs alarm (issue 12: 4 of 12 healthy runs critical).

What separates learning from collapse is the direction the model moves relative to the human data, which the
guard measures as a **distance to gold**: the teacher-forced perplexity of gold continuations where the model
is scored (``gold_ppl``; ``gold_nll`` for arrays), else the outputs' own distance to gold (the bigram
Jensen-Shannon divergence ``js_2`` for text, the Fréchet distance of Gaussian fits for arrays). The **anchor**
is the point with the smallest distance among this check, the run's earlier checks, the baseline taken before
training and a reference profile (earlier points win ties: learning means getting strictly closer).
Output-side signals, and the tail band's perplexity rise, are judged against the anchor as well as gold:

- while the model keeps getting closer to the human data, the anchor is the current check itself: whatever
  it still lacks is the state of an unfinished model, and no output-side signal alerts (a model learns
  frequent tokens first, so its rare-token perplexity may rise meanwhile: not tail loss either);
- once it moves away (training on its own or on degenerate text makes it fit human text worse), what it lost
  since its best point is judged, with the usual bounds;
- a signal that alerted at the anchor check itself is not relaxed to that check's level, so a run that was
  collapsed at its best point keeps alerting against gold;
- the first check of a run with no baseline and no profile has nothing to compare with: its output-side signals
  hold (the callbacks measure the model before training, so theirs always compares).

What is never anchored: the overall perplexity rise (it *is* the distance), overconfidence (the model's NLL of
gold tokens beyond its own entropy there: absolute, from the first check, and judged beyond the level the model
started at), and the late-phase signals (loops, duplicates, samples far outside the data: never healthy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

DISTANCES: dict[str, tuple[str, ...]] = {"text": ("gold_ppl", "js_2"), "array": ("gold_nll", "frechet_distance")}
"""Per gold kind, the distances to gold in order of preference (the model-side one first)."""

Source = Literal["current", "check", "baseline", "profile"]


@dataclass(frozen=True)
class Anchor:
    """The point of the run closest to the human data.

    Attributes:
        metrics: that point's metrics.
        source: ``"current"`` (this check: the model is at its best so far), ``"check"`` (an earlier check),
            ``"baseline"`` (the model before training) or ``"profile"`` (the reference profile).
        index: its position among the run's judged checks (``None`` for the others).
        step: its training step, when known.
        distance: the metric that chose it (``gold_ppl``, ``js_2``, ``gold_nll`` or ``frechet_distance``).
        path: the points whose levels the run reached on its way to the anchor -- the checks up to and including
            it (the learning phase), or the baseline or profile alone -- each with the metrics whose signal
            alerted there.
    """

    metrics: Mapping[str, float]
    source: Source
    index: int | None
    step: int | None
    distance: str
    path: tuple[tuple[Mapping[str, float], frozenset[str]], ...] = ()

    @property
    def value(self) -> float:
        return float(self.metrics[self.distance])

    def level(self, metric: str, higher_is_worse: bool) -> float:
        """The least demanding level of ``metric`` the run reached on its way to the anchor: a level it already
        passed through while still getting closer to gold is no evidence of loss. Points where the metric's own
        signal alerted do not count (a run collapsed on its way is judged against gold)."""
        values = [m.get(metric, math.nan) for m, alerted in self.path if metric not in alerted]
        values = [v for v in values if _finite(v)]
        if not values:
            return math.nan
        return max(values) if higher_is_worse else min(values)

    def describe(self) -> str:
        """How an alert message names it."""
        if self.source == "profile":
            return "reference profile"
        if self.source == "baseline":
            return "level before training"
        if self.source == "current":
            return "current level"
        return f"run's own level up to its best check (step {self.step}, lowest {self.distance})"


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def find_anchor(metrics: Mapping[str, float], checks: Sequence[Mapping[str, Any]],
                baseline: Mapping[str, float] | None, profile: Mapping[str, float] | None,
                kind: str) -> Anchor | None:
    """The point with the smallest distance to gold among this check's ``metrics``, the earlier ``checks``
    (history entries with ``metrics`` and ``step``), the ``baseline`` measured before training and the
    reference ``profile``; an earlier point wins ties. ``None`` when this check measured no distance or
    there is no earlier point to compare it with (the first check of a run without a baseline or profile):
    output-side signals are then judged against gold alone."""
    distance = next((d for d in DISTANCES[kind] if _finite(metrics.get(d))), None)
    if distance is None:
        return None
    path = [(entry["metrics"], frozenset(key.split("/", 1)[1] for key, sev in entry.get("raw", {}).items() if sev))
            for entry in checks]
    best = Anchor(metrics, "current", None, None, distance, (*path, (metrics, frozenset())))
    compared = False  # a model is "still learning" only against an earlier point: none, no anchor
    for i, entry in enumerate(checks):
        value = entry["metrics"].get(distance)
        if _finite(value):
            compared = True
            if value <= best.value:  # an earlier point wins ties: learning means getting strictly closer
                best = Anchor(entry["metrics"], "check", i, entry.get("step"), distance, tuple(path[: i + 1]))
    for source, other in (("baseline", baseline), ("profile", profile)):
        if other is not None and _finite(other.get(distance)):
            compared = True
            if other[distance] <= best.value:
                best = Anchor(other, source, None, None, distance, ((other, frozenset()),))  # type: ignore[arg-type]
    return best if compared else None
