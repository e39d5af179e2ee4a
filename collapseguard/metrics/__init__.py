"""Diversity and collapse metrics: functional forms and mergeable class forms.

>>> from collapseguard.metrics import distinct_n, self_bleu, vendi_score
>>> distinct_n(["a b c", "a b d"], n=1)
0.6666666666666666
"""

# the default metrics of every suite; imported here, so that importing anything from collapseguard.metrics defines
# every metric class (and so declares its direction) and registers it
import collapseguard.metrics.builtin  # noqa: F401
from collapseguard.metrics.base import Metric, State, declared_directions, direction, merge_all
from collapseguard.metrics.bleu import SelfBLEU, self_bleu
from collapseguard.metrics.correctness import PassAtK, pass_at_k
from collapseguard.metrics.embedding import (
    EmbeddingMoments,
    TailMass,
    effective_rank,
    hashed_ngram_features,
    total_variance,
    vendi_score,
)
from collapseguard.metrics.gold_relative import (
    FrequencyBands,
    JSDivergence,
    TailCoverage,
    js_divergence,
    tail_coverage,
)
from collapseguard.metrics.lexical import (
    CompressionRatio,
    DistinctN,
    DuplicateFraction,
    NGramEntropy,
    ZipfCoefficient,
    compression_ratio,
    distinct_n,
    duplicate_fraction,
    ngram_entropy,
    zipf_coefficient,
)
from collapseguard.metrics.model_side import GoldLikelihood, GoldNLL, ModelStats, ReportedMean, banded_perplexity
from collapseguard.metrics.registry import register_metric, registered_metrics, unregister_metric
from collapseguard.metrics.repetition import (
    LengthLimitFraction,
    LoopFraction,
    SeqRepN,
    ends_in_loop,
    length_limit_fraction,
    loop_fraction,
    seq_rep_n,
)
from collapseguard.metrics.within_prompt import (
    DistinctK,
    WithinDistinctN,
    WithinSimilarity,
    within_prompt_diversity,
)

__all__ = [
    "CompressionRatio", "DistinctK", "DistinctN", "DuplicateFraction", "EmbeddingMoments", "FrequencyBands",
    "GoldLikelihood", "GoldNLL", "JSDivergence", "LengthLimitFraction", "LoopFraction", "Metric", "ModelStats",
    "NGramEntropy", "PassAtK", "ReportedMean", "SelfBLEU", "SeqRepN", "State", "TailCoverage", "TailMass", "WithinDistinctN",
    "WithinSimilarity", "ZipfCoefficient", "banded_perplexity", "compression_ratio", "declared_directions",
    "direction", "distinct_n", "duplicate_fraction", "effective_rank", "ends_in_loop", "hashed_ngram_features",
    "js_divergence", "length_limit_fraction", "loop_fraction", "merge_all", "ngram_entropy", "pass_at_k",
    "register_metric", "registered_metrics", "self_bleu", "seq_rep_n", "tail_coverage", "total_variance",
    "unregister_metric", "vendi_score", "within_prompt_diversity", "zipf_coefficient",
]
