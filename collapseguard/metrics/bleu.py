"""Self-BLEU (Zhu et al., 2018) in near-linear time, exactly equal to nltk's.

The naive computation scores each output against all m-1 others: O(m^2 L).
Here every n-gram's clip count against "all outputs but i" is read off two
numbers per n-gram -- its largest and second-largest count over outputs, and
which output holds the largest -- so one sort per order replaces the double loop.
The closest reference length likewise comes from the sorted lengths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from collapseguard._validation import ArgumentTypeError, Interval, validate
from collapseguard.metrics._batch import TokenBatch, as_batch
from collapseguard.metrics.base import Metric

_EPSILON = 0.1  # nltk SmoothingFunction().method1's epsilon


def _clipped_matches(batch: TokenBatch, n: int) -> np.ndarray:
    """Per output: sum over its n-grams of min(count_i, max_{j != i} count_j)."""
    m = len(batch)
    hashes, docs = batch.ngrams(n)
    if hashes.size == 0:
        return np.zeros(m)
    # counts of each (n-gram, output) pair
    order = np.lexsort((docs, hashes))
    h, d = hashes[order], docs[order]
    new_pair = np.ones(h.size, dtype=bool)
    new_pair[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    starts = np.flatnonzero(new_pair)
    pair_h, pair_d = h[starts], d[starts]
    pair_c = np.diff(np.append(starts, h.size))
    # within each n-gram, order pairs by count descending: first = max, second = runner-up
    order = np.lexsort((-pair_c, pair_h))
    pair_h, pair_d, pair_c = pair_h[order], pair_d[order], pair_c[order]
    new_gram = np.ones(pair_h.size, dtype=bool)  # pair_h is sorted: groups start where it changes
    new_gram[1:] = pair_h[1:] != pair_h[:-1]
    first = np.flatnonzero(new_gram)
    group = np.cumsum(new_gram) - 1
    sizes = np.diff(np.append(first, pair_h.size))
    max1 = pair_c[first]
    max2 = np.where(sizes > 1, pair_c[np.minimum(first + 1, pair_h.size - 1)], 0)
    holder = pair_d[first]
    best_other = np.where(pair_d == holder[group], max2[group], max1[group])
    clipped = np.minimum(pair_c, best_other)
    return np.bincount(pair_d, weights=clipped, minlength=m)


def _closest_other_length(lengths: np.ndarray) -> np.ndarray:
    """nltk's closest_ref_length over all lengths but one's own (ties -> shorter)."""
    srt = np.sort(lengths)
    left = np.searchsorted(srt, lengths, "left")
    right = np.searchsorted(srt, lengths, "right")
    big = np.iinfo(np.int64).max // 4
    pred = np.where(left > 0, srt[np.maximum(left - 1, 0)], -big)
    succ = np.where(right < srt.size, srt[np.minimum(right, srt.size - 1)], big)
    nearest = np.where(lengths - pred <= succ - lengths, pred, succ)
    return np.where(right - left >= 2, lengths, nearest)


def _self_bleu_update(batch: TokenBatch, max_n: int) -> list[np.ndarray]:
    # The exact score needs every output's n-grams, so the state is the outputs themselves.
    return list(batch.sequences)


def _self_bleu_compute(sequences: list[np.ndarray], max_n: int) -> float:
    m = len(sequences)
    if m < 2:
        return 0.0
    return float(math.fsum(_self_bleu_scores(sequences, max_n).tolist()) / m)


def _self_bleu_scores(sequences: list[np.ndarray], max_n: int) -> np.ndarray:
    """Each output's BLEU against all the others (nltk's ``sentence_bleu`` per output); needs >= 2 outputs."""
    m = len(sequences)
    batch = TokenBatch(sequences)
    lengths = batch.lengths
    log_p = np.zeros(m)
    first_matches = None
    for n in range(1, max_n + 1):
        num = _clipped_matches(batch, n)
        den = np.maximum(batch.ngram_totals(n), 1).astype(np.float64)
        if n == 1:
            first_matches = num
        p = np.where(num > 0, num / den, _EPSILON / den)
        log_p += np.log(p) / max_n
    ref = _closest_other_length(lengths)
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(lengths > ref, 1.0, np.exp(1.0 - ref / np.maximum(lengths, 1)))
    return np.where((first_matches > 0) & (lengths > 0), bp * np.exp(log_p), 0.0)


def _check_max_n(max_n: int, caller: str) -> int:
    validate(caller, "max_n", max_n, Interval(int, 1, None),
             fix="pass the highest n-gram order BLEU averages over as an int (4 is the usual)", type_error=ArgumentTypeError)
    return int(max_n)


def self_bleu(outputs: Any, max_n: int = 4, tokenizer: Any = None) -> float:
    r"""Mean BLEU of each output against all the others as references.

    .. math:: \mathrm{SelfBLEU} = \frac1m \sum_{i=1}^m
        \mathrm{BLEU}\big(y_i;\ \{y_j\}_{j \ne i}\big)

    with uniform weights over orders 1..``max_n`` and nltk's ``method1``
    smoothing (epsilon 0.1 for orders with no match). The value equals the
    mean of ``nltk.translate.bleu_score.sentence_bleu(others, y_i,
    smoothing_function=SmoothingFunction().method1)`` over i. Higher means
    the outputs resemble each other more (less diverse). Fewer than two outputs
    give 0.0.

    Raises:
        ValueError: if ``max_n`` is not a positive int.

    >>> self_bleu(["the cat sat on the mat", "the cat sat on the mat"])
    1.0
    """
    max_n = _check_max_n(max_n, "self_bleu")
    return _self_bleu_compute(_self_bleu_update(as_batch(outputs, tokenizer), max_n), max_n)


class SelfBLEU(Metric):
    """Class form of :func:`self_bleu` (state: token sequences, concatenated)."""

    name = "self_bleu"
    higher_is_better = False  # outputs that resemble each other more
    sequences: list[np.ndarray]

    def __init__(self, max_n: int = 4) -> None:
        super().__init__()
        self.max_n = _check_max_n(max_n, "SelfBLEU")
        self.add_state("sequences", [], "cat")

    def update(self, outputs: Any) -> None:
        self._fold(sequences=_self_bleu_update(as_batch(outputs), self.max_n))

    def compute(self) -> float:
        return _self_bleu_compute(self.sequences, self.max_n)
