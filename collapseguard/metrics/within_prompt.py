"""Within-prompt diversity: how different the k samples of *one* prompt are from each other.

Metrics across prompts (distinct-n, self-BLEU, duplicates) see a model that gives one fixed answer per prompt as
diverse as long as the prompts differ. RL-tuned models lose exactly the diversity these miss: every sample of a
prompt converges on the same answer (Kirk et al., 2023; Yue et al., 2025). These metrics read *groups* -- the
k samples of one prompt -- and average over groups:

- ``within_distinct_2``: distinct-2 inside each group (unique word bigrams / word bigrams of its k answers);
- ``within_similarity``: mean pairwise Jaccard similarity of the answers' word 1- and 2-gram sets;
- ``distinct_k``: the number of functionally distinct answers among the k (NoveltyBench's ``distinct_k``, Zhang et
  al., 2025), with a cheap equivalence instead of NoveltyBench's trained classifier: two answers are the same when
  their normalised words are identical, or when they are near-duplicates (Jaccard similarity of their word 1- and
  2-gram sets of at least ``NEAR_DUPLICATE``). As in NoveltyBench, answers are partitioned greedily: each joins the
  first class whose first member it equals, else opens a class.

Answers are compared as **normalised words** (NFKC, lower case, runs of letters and digits; punctuation and
whitespace dropped), not model tokens, so that "Paris." and "paris" are one answer and the same gold set gives
the same reference whatever the tokenizer. Each metric keeps one value per group (state ``values``, concatenated);
the merge of two shards of whole groups is exact, and the mean is taken over the sorted values, so it does not
depend on the order shards arrive in.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from collapseguard._validation import FRACTION, ArgumentTypeError, Interval, validate
from collapseguard.gold.tokenization import stable_token_id
from collapseguard.metrics.base import Metric
from collapseguard.metrics.lexical import _check_n

NEAR_DUPLICATE = 0.8
"""Jaccard similarity of word 1- and 2-gram sets at or above which two answers count as one (``distinct_k``)."""

_WORD = re.compile(r"\w+", re.UNICODE)

Group = Sequence[np.ndarray]


def normalize_answer(text: str) -> np.ndarray:
    """The normalised words of an answer as stable ids: NFKC, lower case, ``\\w+`` runs.

    >>> bool((normalize_answer("Paris.") == normalize_answer("  paris")).all())
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"an answer must be a str, got {type(text).__name__}")
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    return np.fromiter((stable_token_id(w) for w in words), dtype=np.int64, count=len(words))


def as_groups(outputs: Sequence[Any], k: int) -> list[list[np.ndarray]]:
    """Cut ``outputs`` (texts or normalised word-id arrays, each prompt's ``k`` samples one after another) into groups.

    Raises:
        ValueError: when the number of outputs is not a multiple of ``k``.
    """
    _check_k(k, "as_groups")
    if len(outputs) % k:
        raise ValueError(f"{len(outputs)} outputs do not split into groups of samples_per_prompt={k}: pass each "
                         f"prompt's {k} samples one after another")
    words = [normalize_answer(o) if isinstance(o, str) else np.asarray(o, dtype=np.int64).reshape(-1) for o in outputs]
    return [words[i:i + k] for i in range(0, len(words), k)]


def _check_k(k: int, caller: str) -> None:
    validate(caller, "k", k, Interval(int, 1, None), fix="pass the number of samples of each prompt (samples_per_prompt) as k",
             type_error=ArgumentTypeError)


def _ngrams(words: np.ndarray, n: int) -> list[tuple[int, ...]]:
    # one conversion to Python ints, then zip: slicing the array per position costs ~10x more (GRPO checks run
    # this on every completion of every group)
    w = words.tolist()
    return list(zip(*(w[i:] for i in range(n)), strict=False))


def _ngram_set(words: np.ndarray, n: int) -> set[tuple[int, ...]]:
    return set(_ngrams(words, n))


def _shingles(words: np.ndarray) -> frozenset[tuple[int, ...]]:
    return _shingles_of(words.tobytes(), words.dtype.str)


@functools.lru_cache(maxsize=8192)
def _shingles_of(data: bytes, dtype: str) -> frozenset[tuple[int, ...]]:
    # cached by content: distinct_k and within_similarity both need every answer's shingles, and a narrowing policy
    # repeats its answers across groups and checks
    words = np.frombuffer(data, dtype=dtype)
    return frozenset(_ngram_set(words, 1) | _ngram_set(words, 2))


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets are identical (1.0)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def group_distinct_n(group: Group, n: int = 2) -> float:
    """Unique word n-grams over word n-grams in one group (NaN when the group holds no n-gram)."""
    grams = [g for w in group for g in _ngrams(w, n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def group_similarity(group: Group) -> float:
    """Mean Jaccard similarity of the word 1-2-gram sets over all pairs of the group (NaN for one answer)."""
    sets = [_shingles(w) for w in group]
    pairs = [jaccard(a, b) for a, b in itertools.combinations(sets, 2)]
    return float(np.mean(pairs)) if pairs else math.nan


def group_distinct_answers(group: Group, threshold: float = NEAR_DUPLICATE) -> int:
    """Functionally distinct answers in one group: greedy classes under exact or near-duplicate equality."""
    reps: list[tuple[np.ndarray, set]] = []
    for words in group:
        shingles = _shingles(words)
        same = any(np.array_equal(words, rw) or jaccard(shingles, rs) >= threshold for rw, rs in reps)
        if not same:
            reps.append((words, shingles))
    return len(reps)


def _mean(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    return math.fsum(finite) / len(finite) if finite else math.nan


class _GroupMetric(Metric):
    """One value per group (state ``values``, concatenated on merge); the result is their mean."""

    values: list[float]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("values", [], "cat")

    def _value(self, group: Group) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, groups: Sequence[Group]) -> None:
        self._fold(values=[float(self._value(g)) for g in groups])

    def compute(self) -> float:
        return _mean(self.values)


class WithinDistinctN(_GroupMetric):
    """Mean over groups of distinct-n inside the group (higher is more diverse)."""

    name = "within_distinct_{n}"
    higher_is_better = True

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.n = _check_n(n, "WithinDistinctN")
        self.name = f"within_distinct_{n}"

    def _value(self, group: Group) -> float:
        return group_distinct_n(group, self.n)


class WithinSimilarity(_GroupMetric):
    """Mean over groups of the mean pairwise Jaccard similarity of answers (higher is *less* diverse)."""

    name = "within_similarity"
    higher_is_better = False

    def _value(self, group: Group) -> float:
        return group_similarity(group)


class DistinctK(_GroupMetric):
    """Mean over groups of the number of functionally distinct answers among k (higher is more diverse; 1 = one
    answer for every sample)."""

    name = "distinct_k"
    higher_is_better = True

    def __init__(self, threshold: float = NEAR_DUPLICATE) -> None:
        super().__init__()
        validate("DistinctK", "threshold", threshold, FRACTION,
                 fix=f"pass the Jaccard similarity at which two answers count as one ({NEAR_DUPLICATE} by default)")
        self.threshold = float(threshold)

    def _value(self, group: Group) -> float:
        return float(group_distinct_answers(group, self.threshold))


def within_prompt_metrics() -> dict[str, Metric]:
    """A fresh set of the within-prompt metrics, by name (:data:`WITHIN_PROMPT`)."""
    return {"within_distinct_2": WithinDistinctN(2), "within_similarity": WithinSimilarity(), "distinct_k": DistinctK()}


WITHIN_PROMPT: tuple[str, ...] = tuple(within_prompt_metrics())
"""The names of the within-prompt metrics, which read whole groups of a prompt's samples (a suite hands them its
``groups`` input: their ``update`` takes it)."""


def within_prompt_diversity(outputs: Sequence[Any], k: int) -> dict[str, float]:
    """Functional form: every within-prompt metric of ``outputs`` (texts, each prompt's ``k`` samples in a row).

    >>> d = within_prompt_diversity(["Paris", "paris.", "Lyon", "Nice", "yes", "yes", "yes", "yes"], k=4)
    >>> d["distinct_k"], d["within_similarity"]
    (2.0, 0.5833333333333334)
    """
    _check_k(k, "within_prompt_diversity")
    groups = as_groups(outputs, k)
    out = {}
    for name, metric in within_prompt_metrics().items():
        metric.update(groups)
        out[name] = metric.compute()
    return out
