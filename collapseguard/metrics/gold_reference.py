"""GoldReference: the metrics of gold itself, measured like a check of the same size.

Count-sensitive metrics (distinct-n, tail coverage, duplicates) depend on how many outputs a check holds, so gold is
measured on as many texts (or rows) as the check has outputs, with the check's own :class:`Measurer` suite: outputs
and gold are compared like with like. Judging (:mod:`collapseguard.detection`) reads these values; it computes none.
"""

from __future__ import annotations

import logging

import numpy as np

from collapseguard.gold.prompts import GoldPrompts
from collapseguard.metrics.measurer import Measurer
from collapseguard.metrics.suite import TextSuite
from collapseguard.metrics.within_prompt import within_prompt_metrics

# the package's one logger (collapseguard.detection.alerts defines it too, by this name): looked up, not imported,
# so the metrics stage does not read from the judging stage after it
logger = logging.getLogger("collapseguard")


class GoldReference:
    """Gold's metric values per check size, each computed once.

    Args:
        measurer: the run's measurer (its suite, gold context, tokenizer and lengths).
        prompts: the text gold set's cut: the reference continuations (and, for pairs, every human response of a
            prompt) are measured; None for an array gold set (its rows are) or no gold (no reference).
    """

    def __init__(self, measurer: Measurer, prompts: GoldPrompts | None = None) -> None:
        self.measurer = measurer
        self.prompts = prompts
        self._cache: dict[int, dict[str, float]] = {}

    @property
    def available(self) -> int:
        """Gold samples a reference can measure: the prompt half's continuations, or the array's rows."""
        gold = self.measurer.gold
        if gold is None:
            return 0
        return len(self.prompts) if self.prompts is not None else gold.array.shape[0]

    def values(self, num_outputs: int) -> dict[str, float]:
        """The metrics of gold itself, on as many gold samples as there are outputs (cached; empty without gold)."""
        m = max(int(num_outputs), 1)
        if self.measurer.gold is None:
            return {}
        if m not in self._cache:
            if m > self.available:
                logger.warning("%d outputs but only %d gold samples for the reference: count-sensitive metrics "
                               "(distinct-n, tail coverage, duplicates) look worse than they are; pass at most %d "
                               "outputs or use a larger gold set", m, self.available, self.available)
            self._cache[m] = self._text(m) if self.prompts is not None else self._array(m)
        return self._cache[m]

    def _text(self, m: int) -> dict[str, float]:
        """The first ``m`` reference continuations, one sample per prompt (gold's within-prompt reference, where it
        has one, is its k responses: :meth:`_within`)."""
        assert self.prompts is not None
        measurer = self.measurer
        suite = TextSuite(measurer.context)
        conts = list(self.prompts.split.continuations[:m])
        # a gold text that ends before the length limit "finished": the share that did not is the
        # reference for outputs that hit the limit without EOS
        suite.update(conts, finished=[c.size < measurer.max_new_tokens for c in conts])
        reference = suite.compute()
        reference["overconfidence"] = 0.0  # human text is its own distribution: no excess confidence
        # how much evidence tail coverage has at this check size (thresholds.min_tail_types)
        reference["tail_types_covered"] = reference["tail_coverage"] * measurer.context.tail_bands.tail_keys.size
        reference.update(self._within(m))
        return reference

    def _array(self, m: int) -> dict[str, float]:
        """``m`` gold rows, drawn at a fixed seed (all of them when the check has as many or more)."""
        array = self.measurer.gold.array
        n = array.shape[0]
        rows = np.random.default_rng(0).choice(n, size=m, replace=False) if m < n else np.arange(n)
        return self.measurer.new_suite().update(array[np.sort(rows)]).compute()

    def _within(self, m: int) -> dict[str, float]:
        """Gold's within-prompt metrics: the first k human responses of each of the first ``m`` prompts that have
        k or more (at least 2 such prompts), cut to ``max_new_tokens`` like the outputs; else nothing (the run's own
        start is then the reference)."""
        assert self.prompts is not None
        k = self.measurer.samples_per_prompt
        groups = [alts[:k] for alts in self.prompts.split.alternatives[:m] if len(alts) >= k]
        if k < 2 or len(groups) < 2:
            return {}
        answers = self.measurer.answers([r for g in groups for r in g])
        grouped = [answers[i:i + k] for i in range(0, len(answers), k)]
        out = {}
        for name, metric in within_prompt_metrics().items():
            metric.update(grouped)
            out[name] = metric.compute()
        return out
