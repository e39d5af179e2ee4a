"""Metrics measured against the gold set: frequency bands, tail coverage, JS divergence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

from collapseguard._validation import ArgumentTypeError, Interval, message, validate
from collapseguard.metrics._batch import TokenBatch, as_batch
from collapseguard.metrics.base import Metric, count_table, sorted_unique
from collapseguard.metrics.lexical import _check_n

BAND_NAMES = ("head", "mid", "tail")


@dataclass(frozen=True)
class FrequencyBands:
    """Gold n-grams split by frequency: the most frequent types that hold the first
    ``head_mass`` of all occurrences are the head, the rarest types that hold the
    last ``tail_mass`` are the tail, the rest is mid.

    Bands come from the gold set itself, so "rare" means rare in the human data.
    """

    keys: np.ndarray  # sorted unique gold n-gram hashes
    band: np.ndarray  # 0 head, 1 mid, 2 tail, aligned with keys
    counts: np.ndarray  # gold occurrences, aligned with keys
    n: int = 1
    min_count: int = 2

    @classmethod
    def from_batch(
        cls, gold: TokenBatch, n: int = 1, head_mass: float = 0.5, tail_mass: float = 0.1
    ) -> FrequencyBands:
        """Bands of a gold token batch's n-grams, by cumulative share of occurrences."""
        caller = "FrequencyBands.from_batch"
        share = Interval(float, 0, 1, closed="neither")
        validate(caller, "tail_mass", tail_mass, share, fix="pass the share of gold occurrences in the rare band, e.g. 0.1",
                 type_error=ArgumentTypeError)
        validate(caller, "head_mass", head_mass, share,
                 fix="pass the share of gold occurrences in the frequent band, e.g. 0.5", type_error=ArgumentTypeError)
        if not head_mass < 1.0 - tail_mass:
            raise ValueError(message(caller, "head_mass", head_mass, f"below 1 - tail_mass = {1.0 - tail_mass:g}",
                                     "the head and tail bands leave room for the mid band: lower head_mass or "
                                     "tail_mass"))
        keys, counts = count_table(gold.ngrams(n)[0])
        # rank by count descending, ties broken by key for determinism
        order = np.lexsort((keys, -counts))
        cum_before = (np.cumsum(counts[order]) - counts[order]) / max(int(counts.sum()), 1)
        band_sorted = np.where(cum_before < head_mass, 0, np.where(cum_before < 1 - tail_mass, 1, 2))
        band = np.empty_like(band_sorted)
        band[order] = band_sorted
        return cls(keys=keys, band=band.astype(np.int8), counts=counts, n=n)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Band of each key; keys unseen in gold count as tail (they are rarer still)."""
        if self.keys.size == 0:
            return np.full(keys.shape, 2, dtype=np.int8)
        idx = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return np.where(self.keys[idx] == keys, self.band[idx], 2).astype(np.int8)

    @property
    def tail_keys(self) -> np.ndarray:
        """Tail types seen at least ``min_count`` times in gold.

        Single occurrences are left out: a gold sample trivially "covers" its own
        hapaxes, which would inflate the gold reference the outputs are judged by.
        """
        return self.keys[(self.band == 2) & (self.counts >= self.min_count)]


# --------------------------------------------------------------- tail coverage
def _tail_coverage_update(batch: TokenBatch, tail_keys: np.ndarray, n: int) -> np.ndarray:
    # = np.intersect1d(hashes, tail_keys): tail_keys are sorted and unique already, so a binary
    # search replaces intersect1d's second unique and sort of the concatenation
    keys = sorted_unique(batch.ngrams(n)[0])
    if keys.size == 0 or tail_keys.size == 0:
        return np.intersect1d(keys, tail_keys)
    idx = np.minimum(np.searchsorted(tail_keys, keys), tail_keys.size - 1)
    return keys[tail_keys[idx] == keys]


def _tail_coverage_compute(covered: np.ndarray, tail_keys: np.ndarray) -> float:
    return float(covered.size / tail_keys.size) if tail_keys.size else 0.0


def tail_coverage(outputs: Any, gold: Any, n: int = 1, tail_mass: float = 0.1, tokenizer: Any = None) -> float:
    r"""Share of the gold set's rare n-gram types that appear in the outputs.

    The rare types (tail band) are the rarest gold types that together make
    up the last ``tail_mass`` of gold n-gram occurrences:

    .. math:: \mathrm{cov} = |T_{gold} \cap \{g \in y_{1..m}\}| \,/\, |T_{gold}|

    The monitor divides this by the coverage an equal-size sample of gold
    reaches, so 1 means "reproduces the tail as well as human text does".

    >>> tail_coverage(["a b"], gold=["a a a a a a a a a a a a a a b b c c"], tail_mass=0.25)
    0.5
    """
    n = _check_n(n, "tail_coverage")
    bands = FrequencyBands.from_batch(as_batch(gold, tokenizer), n=n, tail_mass=tail_mass)
    covered = _tail_coverage_update(as_batch(outputs, tokenizer), bands.tail_keys, n)
    return _tail_coverage_compute(covered, bands.tail_keys)


class TailCoverage(Metric):
    """Class form of :func:`tail_coverage` (state: covered tail types, union)."""

    name = "tail_coverage"
    higher_is_better = True
    covered: np.ndarray

    def __init__(self, bands: FrequencyBands) -> None:
        super().__init__()
        self.bands = bands
        self.add_state("covered", np.empty(0, np.uint64), "union")

    def update(self, outputs: Any) -> None:
        self._fold(covered=_tail_coverage_update(as_batch(outputs), self.bands.tail_keys, self.bands.n))

    def compute(self) -> float:
        return _tail_coverage_compute(self.covered, self.bands.tail_keys)


# ---------------------------------------------------------- JS divergence
def _js_compute(table: tuple[np.ndarray, np.ndarray], gold_table: tuple[np.ndarray, np.ndarray]) -> float:
    if table[0].size == 0 or gold_table[0].size == 0:
        return 1.0 if (table[0].size or gold_table[0].size) else 0.0
    keys = sorted_unique(np.concatenate([table[0], gold_table[0]]))  # = np.union1d, without numpy 2's slow hash path
    p = np.zeros(keys.size)
    q = np.zeros(keys.size)
    p[np.searchsorted(keys, table[0])] = table[1]
    q[np.searchsorted(keys, gold_table[0])] = gold_table[1]
    return float(jensenshannon(p, q, base=2) ** 2)


def js_divergence(outputs: Any, gold: Any, n: int = 1, tokenizer: Any = None) -> float:
    r"""Jensen-Shannon divergence (bits, in [0, 1]) between output and gold n-gram distributions.

    .. math:: \mathrm{JS}(P\|Q) = \tfrac12 \mathrm{KL}(P\|M) + \tfrac12 \mathrm{KL}(Q\|M),\quad M = \tfrac12(P+Q)

    >>> js_divergence(["a"], gold=["b"])
    1.0
    """
    n = _check_n(n, "js_divergence")
    gold_table = count_table(as_batch(gold, tokenizer).ngrams(n)[0])
    return _js_compute(count_table(as_batch(outputs, tokenizer).ngrams(n)[0]), gold_table)


class JSDivergence(Metric):
    """Class form of :func:`js_divergence` (state: output n-gram count table)."""

    name = "js_{n}"
    higher_is_better = False  # a divergence from gold: 0 where the outputs' n-grams are distributed as gold's
    table: tuple[np.ndarray, np.ndarray]

    def __init__(self, gold_table: tuple[np.ndarray, np.ndarray], n: int = 1) -> None:
        super().__init__()
        self.n = _check_n(n, "JSDivergence")
        self.name = f"js_{self.n}"
        self.gold_table = gold_table
        self.add_state("table", (np.empty(0, np.uint64), np.empty(0, np.int64)), "counts")

    def update(self, outputs: Any) -> None:
        self._fold(table=count_table(as_batch(outputs).ngrams(self.n)[0]))

    def compute(self) -> float:
        return _js_compute(self.table, self.gold_table)
