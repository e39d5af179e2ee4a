"""The metrics collapseguard measures by default: one :func:`register_metric` call each, per kind of suite.

Each suite reports its metrics in the order they are registered here. Imported by the package itself
(``collapseguard/metrics/__init__.py``), so every metric class -- and its declared direction -- exists as soon as
anything in :mod:`collapseguard.metrics` is imported, and every suite finds its metrics registered.
"""

from __future__ import annotations

from collapseguard.metrics._batch import TokenBatch
from collapseguard.metrics.base import Metric
from collapseguard.metrics.bleu import SelfBLEU
from collapseguard.metrics.correctness import PassAtK
from collapseguard.metrics.embedding import EmbeddingMoments, TailMass
from collapseguard.metrics.gold_relative import JSDivergence, TailCoverage
from collapseguard.metrics.lexical import CompressionRatio, DistinctN, DuplicateFraction, NGramEntropy, ZipfCoefficient
from collapseguard.metrics.model_side import GoldLikelihood, GoldNLL, ReportedMean
from collapseguard.metrics.registry import register_metric
from collapseguard.metrics.repetition import LengthLimitFraction, LoopFraction, SeqRepN
from collapseguard.metrics.within_prompt import DistinctK, WithinDistinctN, WithinSimilarity

VENDI_DIM = 256
"""Width of the hashed n-gram features a text suite hands its metrics as ``x`` (what ``vendi`` reads)."""


class _Lengths(Metric):
    name = "mean_length"
    higher_is_better = None  # neither: gold's own length is the healthy one
    tokens: int
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("tokens", 0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, outputs: TokenBatch) -> None:
        self._fold(tokens=int(outputs.lengths.sum()), count=len(outputs))

    def compute(self) -> float:
        return self.tokens / self.count if self.count else 0.0


class _Count(Metric):
    name = "num_outputs"
    higher_is_better = None  # a count
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", 0, "sum")

    def update(self, num_outputs: int) -> None:
        self._fold(count=int(num_outputs))

    def compute(self) -> float:
        return float(self.count)


# ---------------------------------------------------------------- text: generated (or gold) token sequences
for _n in (1, 2, 3, 4):
    register_metric("text", lambda _suite, n=_n: DistinctN(n), name=f"distinct_{_n}")
register_metric("text", lambda _suite: NGramEntropy(1), name="entropy_1")
register_metric("text", lambda _suite: NGramEntropy(2), name="entropy_2")
register_metric("text", lambda _suite: SelfBLEU(4), name="self_bleu")
register_metric("text", CompressionRatio, name="compression_ratio")
register_metric("text", DuplicateFraction, name="duplicate_fraction")  # the suite counts its outputs by it
register_metric("text", ZipfCoefficient, name="zipf_coefficient")
register_metric("text", lambda _suite: SeqRepN(4), name="seq_rep_4")
register_metric("text", LoopFraction, name="loop_fraction")
register_metric("text", LengthLimitFraction, name="length_limit_fraction")
register_metric("text", lambda suite: TailCoverage(suite.context.tail_bands), name="tail_coverage")
register_metric("text", lambda suite: JSDivergence(suite.context.tables[1], 1), name="js_1")
register_metric("text", lambda suite: JSDivergence(suite.context.tables[2], 2), name="js_2")
register_metric("text", lambda _suite: EmbeddingMoments(VENDI_DIM, full=False), name="vendi")
register_metric("text", _Lengths)
register_metric("text", lambda suite: GoldLikelihood(suite.context.bands), name="gold_likelihood")

# ---------------------------------------------------------------- within a prompt's group of samples
register_metric(("text", "groups"), lambda _suite: WithinDistinctN(2), name="within_distinct_2")
register_metric(("text", "groups"), WithinSimilarity)
register_metric(("text", "groups"), DistinctK)

# ---------------------------------------------------------------- groups without gold (an RL trainer's)
register_metric("groups", _Count, name="count")
register_metric("groups", lambda suite: PassAtK(suite.samples_per_prompt), name="pass_at_k")
for _name in ReportedMean.outputs:
    register_metric("groups", lambda _suite, name=_name: ReportedMean(name), name=_name)

# ---------------------------------------------------------------- arrays (embeddings, samples)
register_metric("array", lambda suite: EmbeddingMoments(suite.dim, center=suite.ellipsoid.mean,
                                                        gold_cov_sqrt=suite.ellipsoid.cov_sqrt), name="embedding")
register_metric("array", lambda suite: TailMass(suite.ellipsoid), name="tail_mass")
register_metric("array", DuplicateFraction, name="duplicate_fraction")
register_metric("array", GoldNLL)

# ---------------------------------------------------------------- the sentinel: teacher-forced gold scores only
register_metric("sentinel", lambda suite: GoldLikelihood(suite.context.bands), name="gold_likelihood")
register_metric("sentinel", _Count, name="count")
