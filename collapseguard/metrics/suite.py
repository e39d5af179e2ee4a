"""The metric collections one check measures, for text and for array outputs.

A suite is a dict of mergeable metrics plus the gold context they need (bands,
gold n-gram tables, the gold ellipsoid). ``suite.merge(other)`` is exact, so
each process can measure its shard and any process can compute the whole.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from collapseguard.metrics import (
    CompressionRatio,
    DistinctN,
    DuplicateFraction,
    EmbeddingMoments,
    FrequencyBands,
    GoldLikelihood,
    GoldNLL,
    JSDivergence,
    LengthLimitFraction,
    LoopFraction,
    Metric,
    ModelStats,
    NGramEntropy,
    ReportedMean,
    SelfBLEU,
    SeqRepN,
    TailCoverage,
    TailMass,
    ZipfCoefficient,
    hashed_ngram_features,
)
from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.base import count_table, direction_word
from collapseguard.metrics.correctness import PassAtK
from collapseguard.metrics.embedding import GoldEllipsoid, as_matrix, blas_controller
from collapseguard.metrics.within_prompt import WITHIN_PROMPT, within_prompt_metrics

VENDI_DIM = 256


class _Lengths(Metric):
    name = "mean_length"
    higher_is_better = None  # neither: gold's own length is the healthy one
    tokens: int
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("tokens", 0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, batch: TokenBatch) -> None:
        self._fold(tokens=int(batch.lengths.sum()), count=len(batch))

    def compute(self) -> float:
        return self.tokens / self.count if self.count else 0.0


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


def _update_within(metrics: dict[str, Metric], answers: Sequence[np.ndarray] | None, k: int) -> None:
    """Fold whole groups of ``k`` answers (normalised words, each prompt's samples in a row) into the
    within-prompt metrics."""
    if answers is None:
        raise ValueError(f"samples_per_prompt={k}: the within-prompt metrics need each output's answer words")
    if len(answers) % k:
        raise ValueError(f"{len(answers)} outputs do not split into groups of samples_per_prompt={k}: pass each "
                         f"prompt's {k} samples one after another")
    groups = [list(answers[i:i + k]) for i in range(0, len(answers), k)]
    for name in WITHIN_PROMPT:
        metrics[name].update(groups)


class TextSuite(MetricSuite):
    """Every text metric of one check.

    With ``samples_per_prompt=k > 1`` the outputs come as groups of k samples of one prompt: the metrics across
    prompts read the first sample of each group (so they mean what they mean with one sample per prompt), and the
    within-prompt metrics (:mod:`collapseguard.metrics.within_prompt`) read every group.
    """

    def __init__(self, context: TextGoldContext, samples_per_prompt: int = 1) -> None:
        self.samples_per_prompt = samples_per_prompt
        metrics: dict[str, Metric] = {f"distinct_{n}": DistinctN(n) for n in (1, 2, 3, 4)}
        metrics.update({
            "entropy_1": NGramEntropy(1), "entropy_2": NGramEntropy(2), "self_bleu": SelfBLEU(4),
            "compression_ratio": CompressionRatio(), "duplicate_fraction": DuplicateFraction(),
            "zipf_coefficient": ZipfCoefficient(), "seq_rep_4": SeqRepN(4), "loop_fraction": LoopFraction(),
            "length_limit_fraction": LengthLimitFraction(), "tail_coverage": TailCoverage(context.tail_bands),
            "js_1": JSDivergence(context.tables[1], 1), "js_2": JSDivergence(context.tables[2], 2),
            "vendi": EmbeddingMoments(VENDI_DIM, full=False), "mean_length": _Lengths(),
            "gold_likelihood": GoldLikelihood(context.bands),
        })
        if samples_per_prompt > 1:
            metrics.update(within_prompt_metrics())
        super().__init__(metrics)

    def update(self, sequences: Sequence[np.ndarray] | TokenBatch, finished: Sequence[bool] | None = None,
               model_stats: ModelStats | None = None, answers: Sequence[np.ndarray] | None = None) -> TextSuite:
        k = self.samples_per_prompt
        if k > 1:
            _update_within(self.metrics, answers, k)
            seqs = sequences.sequences if isinstance(sequences, TokenBatch) else list(sequences)
            sequences = seqs[::k]
            finished = list(finished)[::k] if finished is not None else None
        batch = sequences if isinstance(sequences, TokenBatch) else TokenBatch(sequences)
        for name, metric in self.metrics.items():
            if name in WITHIN_PROMPT:
                continue
            if name == "vendi":
                metric.update(hashed_ngram_features(batch, VENDI_DIM))
            elif name == "length_limit_fraction":
                if finished is not None:
                    if len(finished) != len(batch):
                        raise ValueError(f"finished has {len(finished)} flags for {len(batch)} outputs")
                    metric.update(finished)
            elif name == "gold_likelihood":
                if model_stats is not None:
                    metric.update(model_stats)
            else:
                metric.update(batch)
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        if not self.metrics["gold_likelihood"].count.any():
            for key in [k for k in out if k.startswith("gold_ppl") or k in ("next_token_entropy", "overconfidence")]:
                out.pop(key)
        return out


class _Count(Metric):
    name = "num_outputs"
    higher_is_better = None  # a count
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", 0, "sum")

    def update(self, n: int) -> None:
        self._fold(count=int(n))

    def compute(self) -> float:
        return float(self.count)


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
        metrics: dict[str, Metric] = {**within_prompt_metrics(), "count": _Count(),
                                      "pass_at_k": PassAtK(samples_per_prompt)}
        metrics.update({name: ReportedMean(name, direction) for name, direction in REPORTED.items()})
        super().__init__(metrics)

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
        if correct is not None:
            if len(correct) != len(answers):
                raise ValueError(f"{len(correct)} correctness values for {len(answers)} outputs: judge every output")
            k = self.samples_per_prompt
            self.metrics["pass_at_k"].update([correct[i:i + k] for i in range(0, len(correct), k)])
        if answers:
            _update_within(self.metrics, answers, self.samples_per_prompt)
        self.metrics["count"].update(len(answers))
        for name, values in (reported or {}).items():
            self.metrics[name].update(values)
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
        self.dim = dim
        super().__init__({
            "embedding": EmbeddingMoments(dim, center=ellipsoid.mean, gold_cov_sqrt=ellipsoid.cov_sqrt),
            "tail_mass": TailMass(ellipsoid),
            "duplicate_fraction": DuplicateFraction(), "gold_nll": GoldNLL(),
        })

    def update(self, x: Any, gold_loglik: Sequence[float] | None = None) -> ArraySuite:
        m = as_matrix(x)
        if gold_loglik is not None:
            self.metrics["gold_nll"].update(gold_loglik)
        self.metrics["embedding"].update(m)
        self.metrics["tail_mass"].update(m)
        rows = np.ascontiguousarray(m).view(np.int64)  # exact bit patterns: duplicates only
        self.metrics["duplicate_fraction"].update(TokenBatch(list(rows)))
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        if not self.metrics["gold_nll"].count:
            out.pop("gold_nll")
        else:  # score_fn gives a log-likelihood per row: judged per dimension, as a perplexity per dimension
            out["gold_nll"] /= self.dim
        return out


class SentinelSuite(MetricSuite):
    """The sentinel tier's check: model-side statistics on gold continuations only (teacher-forced, no generation).

    Gold perplexity overall and by frequency band, next-token entropy and overconfidence, over ``num_outputs`` gold
    texts: what moves first when a model forgets the human tail, at the cost of one forward pass.
    """

    def __init__(self, context: TextGoldContext) -> None:
        super().__init__({"gold_likelihood": GoldLikelihood(context.bands), "count": _Count()})

    @property
    def num_outputs(self) -> int:
        return int(self.metrics["count"].count)

    def update(self, model_stats: ModelStats) -> SentinelSuite:
        self.metrics["gold_likelihood"].update(model_stats)
        self.metrics["count"].update(len(model_stats.token_ids))
        return self

    def compute(self) -> dict[str, float]:
        out = super().compute()
        out.pop("count")
        return out
