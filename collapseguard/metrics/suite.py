"""The metric collections one check measures, for text and for array outputs.

A suite is a dict of mergeable metrics plus the gold context they need (bands,
gold n-gram tables, the gold ellipsoid). ``suite.merge(other)`` is exact, so
each process can measure its shard and any process can compute the whole.

Which metrics a suite holds is the registry's (:mod:`collapseguard.metrics.registry`; the defaults are
:mod:`collapseguard.metrics.builtin`). A suite prepares a batch's inputs under their names
(:data:`~collapseguard.metrics.registry.SUITE_INPUTS`) and hands each metric those its ``update`` names: adding a
metric changes no code here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from collapseguard.metrics import FrequencyBands, Metric, ModelStats, ReportedMean, hashed_ngram_features
from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.base import count_table, direction_word
from collapseguard.metrics.builtin import VENDI_DIM
from collapseguard.metrics.embedding import GoldEllipsoid, as_matrix, blas_controller
from collapseguard.metrics.registry import SUITE_INPUTS, can_measure, check_inputs, registered_metrics, update_from

__all__ = ["REPORTED", "VENDI_DIM", "ArraySuite", "GroupSuite", "MetricSuite", "SentinelSuite", "TextGoldContext",
           "TextSuite"]


class TextGoldContext:
    """What text metrics need from the gold set, computed once per monitor."""

    def __init__(self, gold_sequences: Sequence[np.ndarray], tail_sequences: Sequence[np.ndarray] | None = None,
                 tail_mass: float = 0.25) -> None:
        blas_controller()  # built here, once per monitor, rather than inside the first check
        batch = TokenBatch(gold_sequences)
        # bands for model-side statistics come from all of gold; the tail types whose
        # coverage is measured come from the held-out half (see GoldSplit.halves)
        self.bands = FrequencyBands.from_batch(batch, n=1, tail_mass=tail_mass)
        tail_batch = TokenBatch(tail_sequences) if tail_sequences is not None else batch
        self.tail_bands = FrequencyBands.from_batch(tail_batch, n=1, tail_mass=tail_mass)
        self.tables = {n: count_table(batch.ngrams(n)[0]) for n in (1, 2)}


class MetricSuite:
    """A named collection of mergeable metrics."""

    def __init__(self, metrics: dict[str, Metric]) -> None:
        self.metrics = metrics

    def _registered(self, kind: str, available: Iterable[str]) -> dict[str, Metric]:
        """A fresh instance of every metric registered for ``kind`` whose required inputs are among ``available``
        (what this suite gives), built for this suite (its gold context and sizes are set before)."""
        available = set(available)
        metrics = {}
        for name, registration in registered_metrics(kind).items():
            metric = registration.build(self)
            check_inputs(metric, kind)  # a factory's metric is checked here: it is first seen built
            if can_measure(metric, available):
                metrics[name] = metric
        return metrics

    def _update_metrics(self, **inputs: Any) -> None:
        """Hand every metric the inputs its ``update`` names (torchmetrics' ``MetricCollection`` does the same)."""
        for metric in self.metrics.values():
            update_from(metric, inputs)

    @property
    def num_outputs(self) -> int:
        return int(self.metrics["duplicate_fraction"].table[1].sum())

    def merge(self, other: MetricSuite) -> MetricSuite:
        if other.metrics.keys() != self.metrics.keys():
            raise TypeError("cannot merge suites that measure different metrics")
        for name, metric in self.metrics.items():
            metric.merge(other.metrics[name])
        return self

    def copy(self) -> MetricSuite:
        # metric states are copied, the gold context (bands, gold tables) is shared: it is read-only
        new = copy.copy(self)
        new.metrics = {name: metric.copy() for name, metric in self.metrics.items()}
        return new

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, metric in self.metrics.items():
            if hasattr(metric, "compute_all"):
                out.update(metric.compute_all())
            else:
                out[name] = float(metric.compute())
        out["num_outputs"] = float(self.num_outputs)
        return out


def _groups(answers: Sequence[np.ndarray] | None, k: int) -> list[list[np.ndarray]]:
    """Whole groups of ``k`` answers (normalised words, each prompt's samples in a row): the within-prompt metrics'
    input."""
    if answers is None:
        raise ValueError(f"samples_per_prompt={k}: the within-prompt metrics need each output's answer words")
    if len(answers) % k:
        raise ValueError(f"{len(answers)} outputs do not split into groups of samples_per_prompt={k}: pass each "
                         f"prompt's {k} samples one after another")
    return [list(answers[i:i + k]) for i in range(0, len(answers), k)]


class TextSuite(MetricSuite):
    """Every text metric of one check.

    With ``samples_per_prompt=k > 1`` the outputs come as groups of k samples of one prompt: the metrics across
    prompts read the first sample of each group (so they mean what they mean with one sample per prompt), and the
    within-prompt metrics (:mod:`collapseguard.metrics.within_prompt`) read every group.
    """

    def __init__(self, context: TextGoldContext, samples_per_prompt: int = 1) -> None:
        self.context = context
        self.samples_per_prompt = samples_per_prompt
        # one sample per prompt gives no groups: the metrics that read groups are left out, not reported empty
        given = set(SUITE_INPUTS["text"]) - (set() if samples_per_prompt > 1 else {"groups"})
        super().__init__(self._registered("text", given))

    def update(self, sequences: Sequence[np.ndarray] | TokenBatch, finished: Sequence[bool] | None = None,
               model_stats: ModelStats | None = None, answers: Sequence[np.ndarray] | None = None) -> TextSuite:
        k = self.samples_per_prompt
        groups = None
        if k > 1:
            groups = _groups(answers, k)
            seqs = sequences.sequences if isinstance(sequences, TokenBatch) else list(sequences)
            sequences = seqs[::k]
            finished = list(finished)[::k] if finished is not None else None
        batch = sequences if isinstance(sequences, TokenBatch) else TokenBatch(sequences)
        if finished is not None and len(finished) != len(batch):
            raise ValueError(f"finished has {len(finished)} flags for {len(batch)} outputs")
        self._update_metrics(outputs=batch, x=hashed_ngram_features(batch, VENDI_DIM), finished=finished,
                             stats=model_stats, groups=groups)
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        scored = self.metrics.get("gold_likelihood")
        if scored is None or not scored.count.any():  # no model statistics given: not measured, so not reported
            for key in [k for k in out if k.startswith("gold_ppl") or k in ("next_token_entropy", "overconfidence")]:
                out.pop(key)
        return out


REPORTED = {name: direction_word(hib) for name, hib in ReportedMean.outputs.items()}
"""The trainer-reported statistics a :class:`GroupSuite` takes, with their direction (as
:attr:`ReportedMean.outputs` declares it)."""


class GroupSuite(MetricSuite):
    """A check without gold: groups of ``samples_per_prompt`` samples of the prompts the trainer drew (GRPO's
    groups), measured by the within-prompt metrics, plus statistics the trainer reports (:data:`REPORTED`), and, where
    each sample is judged right or wrong, pass@k and the split of groups (:class:`~collapseguard.metrics.PassAtK`).
    Judged against the run's own start."""

    def __init__(self, samples_per_prompt: int) -> None:
        self.samples_per_prompt = samples_per_prompt
        super().__init__(self._registered("groups", SUITE_INPUTS["groups"]))

    @property
    def num_outputs(self) -> int:
        return int(self.metrics["count"].count)

    def update(self, answers: Sequence[np.ndarray], reported: dict[str, Sequence[float]] | None = None,
               correct: Sequence[bool] | None = None) -> GroupSuite:
        """Fold in whole groups of answers (each prompt's samples in a row), the trainer's statistics, and each
        answer judged right or wrong (``correct``, in the answers' order)."""
        unknown = sorted(set(reported or {}) - set(REPORTED))
        if unknown:
            raise ValueError(f"reported statistics {unknown} are not known: pass {sorted(REPORTED)}")
        k = self.samples_per_prompt
        if correct is not None and len(correct) != len(answers):
            raise ValueError(f"{len(correct)} correctness values for {len(answers)} outputs: judge every output")
        self._update_metrics(groups=_groups(answers, k) if answers else None, reported=reported,
                             correct=[correct[i:i + k] for i in range(0, len(correct), k)] if correct is not None
                             else None, num_outputs=len(answers))
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        out.pop("count")
        if not out.get("num_groups"):
            out.pop("num_groups", None)  # no correctness given: pass@k was not measured
        return {k: v for k, v in out.items() if np.isfinite(v)}  # what was not measured is absent


class ArraySuite(MetricSuite):
    """Every embedding/sample metric of one check."""

    def __init__(self, ellipsoid: GoldEllipsoid, dim: int) -> None:
        self.ellipsoid = ellipsoid
        self.dim = dim
        super().__init__(self._registered("array", SUITE_INPUTS["array"]))

    def update(self, x: Any, gold_loglik: Sequence[float] | None = None) -> ArraySuite:
        m = as_matrix(x)
        rows = np.ascontiguousarray(m).view(np.int64)  # exact bit patterns: duplicates only
        self._update_metrics(x=m, outputs=TokenBatch(list(rows)), loglik=gold_loglik)
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        scored = self.metrics.get("gold_nll")
        if scored is not None and not scored.count:
            out.pop("gold_nll")
        elif scored is not None:  # score_fn gives a log-likelihood per row: judged per dimension, as a perplexity per dimension
            out["gold_nll"] /= self.dim
        return out


class SentinelSuite(MetricSuite):
    """The sentinel tier's check: model-side statistics on gold continuations only (teacher-forced, no generation).

    Gold perplexity overall and by frequency band, next-token entropy and overconfidence, over ``num_outputs`` gold
    texts: what moves first when a model forgets the human tail, at the cost of one forward pass.
    """

    def __init__(self, context: TextGoldContext) -> None:
        self.context = context
        super().__init__(self._registered("sentinel", SUITE_INPUTS["sentinel"]))

    @property
    def num_outputs(self) -> int:
        return int(self.metrics["count"].count)

    def update(self, model_stats: ModelStats) -> SentinelSuite:
        self._update_metrics(stats=model_stats, num_outputs=len(model_stats.token_ids))
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        out.pop("count")
        return out
