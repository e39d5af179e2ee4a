"""Lexical diversity: distinct-n, n-gram entropy, compression ratio, duplicates, Zipf.

Each metric is a pure ``_update`` (batch -> sufficient statistics) and
``_compute`` (statistics -> value) pair; the functional form composes them and
the class form keeps the statistics as mergeable states.
"""

from __future__ import annotations

import gzip
import math
from typing import Any

import numpy as np
from scipy.special import entr as _entr

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.metrics._batch import TokenBatch, as_batch
from collapseguard.metrics.base import Metric, count_table, sorted_unique


def _check_n(n: int, caller: str, name: str = "n") -> int:
    """``n`` as an int, or the one refusal (wrong types raise an error that is both a TypeError and, as before,
    a ValueError)."""
    validate(caller, name, n, Interval(int, 1, None), fix="pass the n-gram order as an int: 1 for unigrams, 2 for bigrams",
             type_error=ArgumentTypeError)
    return int(n)


# ---------------------------------------------------------------- distinct-n
def _distinct_n_update(batch: TokenBatch, n: int) -> tuple[np.ndarray, int]:
    hashes, _ = batch.ngrams(n)
    return sorted_unique(hashes), int(hashes.size)


def _distinct_n_compute(unique_keys: np.ndarray, total: int) -> float:
    return float(unique_keys.size / total) if total else 0.0


def distinct_n(outputs: Any, n: int = 2, tokenizer: Any = None) -> float:
    r"""Corpus distinct-n (Li et al., 2016): unique n-grams over all n-grams.

    .. math:: \mathrm{distinct}_n = |\{g\}| \,/\, \sum_i \max(0, |y_i| - n + 1)

    Args:
        outputs: texts or token-id sequences.
        n: n-gram order (>= 1).
        tokenizer: tokenizer for texts (default :class:`~collapseguard.gold.tokenization.SimpleTokenizer`).

    Returns 0.0 when the outputs hold no n-gram.

    Raises:
        ValueError: if ``n`` is not a positive int.

    >>> distinct_n(["a b a b", "a b c"], n=2)
    0.6
    """
    n = _check_n(n, "distinct_n")
    return _distinct_n_compute(*_distinct_n_update(as_batch(outputs, tokenizer), n))


class DistinctN(Metric):
    """Class form of :func:`distinct_n` (states: unique n-gram hashes, n-gram count)."""

    name = "distinct_{n}"
    higher_is_better = True
    keys: np.ndarray
    total: int

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.n = _check_n(n, "DistinctN")
        self.name = f"distinct_{self.n}"
        self.add_state("keys", np.empty(0, np.uint64), "union")
        self.add_state("total", 0, "sum")

    def update(self, outputs: Any) -> None:
        keys, total = _distinct_n_update(as_batch(outputs), self.n)
        self._fold(keys=keys, total=total)

    def compute(self) -> float:
        return _distinct_n_compute(self.keys, self.total)


# ------------------------------------------------------------ n-gram entropy
def _ngram_entropy_update(batch: TokenBatch, n: int) -> tuple[np.ndarray, np.ndarray]:
    return count_table(batch.ngrams(n)[0])


def _ngram_entropy_compute(table: tuple[np.ndarray, np.ndarray]) -> float:
    counts = table[1]
    if not counts.size:
        return 0.0
    # scipy.stats.entropy(counts, base=2) step for step, without its array-API wrapper (~0.1 ms a call)
    p = counts / np.sum(counts)
    return float(np.sum(_entr(p)) / math.log(2))


def ngram_entropy(outputs: Any, n: int = 1, tokenizer: Any = None) -> float:
    r"""Shannon entropy, in bits, of the n-gram frequency distribution of all outputs.

    .. math:: H_n = -\sum_g p(g)\log_2 p(g),\quad p(g) = c(g) / \sum_{g'} c(g')

    Returns 0.0 when there is no n-gram.

    >>> ngram_entropy(["a b", "c d"], n=1)
    2.0
    """
    n = _check_n(n, "ngram_entropy")
    return _ngram_entropy_compute(_ngram_entropy_update(as_batch(outputs, tokenizer), n))


class NGramEntropy(Metric):
    """Class form of :func:`ngram_entropy` (state: n-gram count table)."""

    name = "entropy_{n}"
    higher_is_better = True
    table: tuple[np.ndarray, np.ndarray]

    def __init__(self, n: int = 1) -> None:
        super().__init__()
        self.n = _check_n(n, type(self).__name__)
        self.name = f"entropy_{self.n}"
        self.add_state("table", (np.empty(0, np.uint64), np.empty(0, np.int64)), "counts")

    def update(self, outputs: Any) -> None:
        self._fold(table=_ngram_entropy_update(as_batch(outputs), self.n))

    def compute(self) -> float:
        return _ngram_entropy_compute(self.table)


# --------------------------------------------------------- compression ratio
def _serialize(batch: TokenBatch) -> list[bytes]:
    # Token ids, not detokenised text: gold and outputs are then compared in the
    # same units whatever the tokenizer's decode does.
    return [" ".join(map(str, s.tolist())).encode("ascii") for s in batch.sequences]


def _compression_ratio_update(batch: TokenBatch) -> list[bytes]:
    return _serialize(batch)


def _compression_ratio_compute(chunks: list[bytes]) -> float:
    # sorted, so the value does not depend on the order outputs arrive in (ranks, shards)
    if not any(chunks):  # no tokens at all
        return 0.0
    raw = b"\n".join(sorted(chunks))
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))


def compression_ratio(outputs: Any, tokenizer: Any = None) -> float:
    r"""Raw size over gzip size of all outputs joined (one gzip, level 9).

    Outputs are serialised as their token ids (decimal, space-separated, one
    output per line, lines sorted so that the order of outputs does not matter).
    Repetitive, generic outputs compress better, so the ratio rises as diversity falls.

    .. math:: \mathrm{CR} = |b| / |\mathrm{gzip}(b)|,\quad b = \mathrm{join}(y_1, \dots, y_m)

    Returns 0.0 for no tokens.

    >>> compression_ratio([[1, 2, 3]] * 50) > compression_ratio([[i, i + 1, i + 2] for i in range(50)])
    True
    """
    return _compression_ratio_compute(_compression_ratio_update(as_batch(outputs, tokenizer)))


class CompressionRatio(Metric):
    """Class form of :func:`compression_ratio` (state: serialised outputs, concatenated)."""

    name = "compression_ratio"
    higher_is_better = False  # repetitive, generic outputs compress better
    chunks: list[bytes]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("chunks", [], "cat")

    def update(self, outputs: Any) -> None:
        self._fold(chunks=_compression_ratio_update(as_batch(outputs)))

    def compute(self) -> float:
        return _compression_ratio_compute(self.chunks)


# ---------------------------------------------------- duplicate-output share
def _duplicate_fraction_update(batch: TokenBatch) -> tuple[np.ndarray, np.ndarray]:
    return count_table(batch.sequence_hashes)


def _duplicate_fraction_compute(table: tuple[np.ndarray, np.ndarray]) -> float:
    total = int(table[1].sum())
    return 1.0 - table[0].size / total if total else 0.0


def duplicate_fraction(outputs: Any, tokenizer: Any = None) -> float:
    r"""Share of outputs that exactly repeat an earlier output.

    .. math:: \mathrm{dup} = 1 - |\{y_i\}| / m

    >>> duplicate_fraction(["same", "same", "same", "other"])
    0.5
    """
    return _duplicate_fraction_compute(_duplicate_fraction_update(as_batch(outputs, tokenizer)))


class DuplicateFraction(Metric):
    """Class form of :func:`duplicate_fraction` (state: output-hash count table)."""

    name = "duplicate_fraction"
    higher_is_better = False
    table: tuple[np.ndarray, np.ndarray]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("table", (np.empty(0, np.uint64), np.empty(0, np.int64)), "counts")

    def update(self, outputs: Any) -> None:
        self._fold(table=_duplicate_fraction_update(as_batch(outputs)))

    def compute(self) -> float:
        return _duplicate_fraction_compute(self.table)


# ----------------------------------------------------------- Zipf coefficient
def _zipf_compute(table: tuple[np.ndarray, np.ndarray]) -> float:
    counts = np.sort(table[1])[::-1].astype(np.float64)
    if counts.size < 2:
        return 0.0
    x = np.log(np.arange(1, counts.size + 1, dtype=np.float64))
    y = np.log(counts)
    xc = x - x.mean()
    return float(-(xc @ (y - y.mean())) / (xc @ xc))


def zipf_coefficient(outputs: Any, tokenizer: Any = None) -> float:
    r"""Zipf exponent s of the unigram rank-frequency curve (Holtzman et al., 2020).

    Least-squares slope of :math:`\log c_r` on :math:`\log r` over all ranks,
    negated: :math:`\log c_r \approx a - s \log r`. A larger s means mass
    concentrated on few tokens (a thinner tail). Returns 0.0 with fewer than 2 types.

    >>> round(zipf_coefficient(["a"] * 6 + ["b"] * 3 + ["c"] * 2), 6)
    1.0
    """
    return _zipf_compute(_ngram_entropy_update(as_batch(outputs, tokenizer), 1))


class ZipfCoefficient(NGramEntropy):
    """Class form of :func:`zipf_coefficient` (state: unigram count table)."""

    name = "zipf_coefficient"
    higher_is_better = False  # a larger exponent: mass on fewer tokens, a thinner tail

    def __init__(self) -> None:
        super().__init__(n=1)
        self.name = "zipf_coefficient"

    def compute(self) -> float:
        return _zipf_compute(self.table)
