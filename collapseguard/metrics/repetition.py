"""Repetition inside outputs: seq-rep-n, looping endings, and the length-limit share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from collapseguard.metrics._batch import TokenBatch, as_batch
from collapseguard.metrics.base import Metric
from collapseguard.metrics.lexical import _check_n


# ------------------------------------------------------------------ seq-rep-n
def _seq_rep_n_update(batch: TokenBatch, n: int) -> tuple[float, int]:
    hashes, docs = batch.ngrams(n)
    m = len(batch)
    if m == 0:
        return 0.0, 0
    totals = batch.ngram_totals(n)
    if hashes.size:
        order = np.lexsort((hashes, docs))  # by output, then n-gram: unique pairs are the changes
        d, h = docs[order], hashes[order]
        first = np.concatenate(([True], (d[1:] != d[:-1]) | (h[1:] != h[:-1])))
        unique_per_doc = np.bincount(d[first], minlength=m)
    else:
        unique_per_doc = np.zeros(m, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rep = np.where(totals > 0, 1.0 - unique_per_doc / np.maximum(totals, 1), 0.0)
    return float(rep.sum()), m


def _mean_compute(total: float, count: int) -> float:
    return float(total / count) if count else 0.0


def seq_rep_n(outputs: Any, n: int = 4, tokenizer: Any = None) -> float:
    r"""Mean share of repeated n-grams inside each output (Welleck et al., 2019).

    .. math:: \mathrm{seq\text{-}rep\text{-}n} = \frac1m \sum_i
        \Big(1 - \frac{|\mathrm{unique}\ n\text{-grams}(y_i)|}{|n\text{-grams}(y_i)|}\Big)

    Outputs shorter than n count as 0.

    >>> seq_rep_n(["a b a b a b", "a b c d"], n=2)
    0.3
    """
    n = _check_n(n, "seq_rep_n")
    return _mean_compute(*_seq_rep_n_update(as_batch(outputs, tokenizer), n))


class SeqRepN(Metric):
    """Class form of :func:`seq_rep_n` (states: sum of per-output values, count)."""

    name = "seq_rep_{n}"
    higher_is_better = False
    total: float
    count: int

    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.n = _check_n(n, "SeqRepN")
        self.name = f"seq_rep_{self.n}"
        self.add_state("total", 0.0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, outputs: Any) -> None:
        total, count = _seq_rep_n_update(as_batch(outputs), self.n)
        self._fold(total=total, count=count)

    def compute(self) -> float:
        return _mean_compute(self.total, self.count)


# ------------------------------------------------------------- looping endings
def ends_in_loop(
    sequence: np.ndarray, min_repeats: int = 3, max_period: int = 16, min_tokens: int = 8
) -> bool:
    """True when the sequence ends with a span repeated at least ``min_repeats`` times.

    The repeated block covers at least ``min_tokens`` tokens, so that a short
    natural echo ("very very very") does not count.
    """
    s = np.asarray(sequence)
    for period in range(1, max_period + 1):
        span = max(period * min_repeats, min_tokens)
        span += (-span) % period  # whole periods only
        if s.size < span:
            continue  # span is not monotone in period (min_tokens), so a longer period may still fit
        tail = s[-span:]
        if np.array_equal(tail[period:], tail[:-period]):
            return True
    return False


def _loop_spans(min_repeats: int, max_period: int, min_tokens: int) -> list[tuple[int, int]]:
    """(period, span) pairs that :func:`ends_in_loop` tries, in its order."""
    spans = []
    for period in range(1, max_period + 1):
        span = max(period * min_repeats, min_tokens)
        spans.append((period, span + (-span) % period))
    return spans


def _loops(batch: TokenBatch, min_repeats: int, max_period: int, min_tokens: int) -> np.ndarray:
    """:func:`ends_in_loop` of every sequence at once (same answers, no Python loop per output).

    The last ``width`` tokens of each sequence are right-aligned in one matrix; a period loops a
    row when the row is long enough for its span and every token of the span's last
    ``span - period`` equals the token ``period`` earlier.
    """
    m = len(batch)
    spans = _loop_spans(min_repeats, max_period, min_tokens)
    if any(span < 1 for _, span in spans):  # degenerate settings: compare whole sequences as ends_in_loop does
        return np.array([ends_in_loop(s, min_repeats, max_period, min_tokens) for s in batch.sequences], dtype=bool)
    lengths = batch.lengths
    spans = [(p, span) for p, span in spans if m and span <= lengths.max()]  # longer spans fit no output
    if not spans:
        return np.zeros(m, dtype=bool)
    width = max(span for _, span in spans)
    tails = np.zeros((m, width), dtype=np.uint64)
    keep = np.minimum(lengths, width)
    # row i's last keep[i] tokens go to its last keep[i] columns
    col = np.arange(width)[None, :] >= (width - keep)[:, None]
    if col.any():
        ends = np.cumsum(lengths)
        src = (ends - keep)[:, None] + (np.arange(width)[None, :] - (width - keep)[:, None])
        tails[col] = batch.flat[src[col]]
    hits = np.zeros(m, dtype=bool)
    for period, span in spans:
        fits = ~hits & (lengths >= span)
        if fits.any():
            rows = tails[fits, width - span:]
            hits[fits] = (rows[:, period:] == rows[:, :-period]).all(axis=1)
    return hits


def _loop_fraction_update(
    batch: TokenBatch, min_repeats: int, max_period: int, min_tokens: int
) -> tuple[float, int]:
    return float(_loops(batch, min_repeats, max_period, min_tokens).sum()), len(batch)


def loop_fraction(
    outputs: Any,
    min_repeats: int = 3,
    max_period: int = 16,
    min_tokens: int = 8,
    tokenizer: Any = None,
) -> float:
    r"""Share of outputs that end in a repetition loop.

    An output loops when its last ``k * p`` tokens (``k >= min_repeats``,
    ``p <= max_period``, at least ``min_tokens`` tokens) are one span of p
    tokens repeated k times -- the signature of a degenerate decoder.

    >>> loop_fraction([[1, 2] * 6, list(range(12))])
    0.5
    """
    return _mean_compute(
        *_loop_fraction_update(as_batch(outputs, tokenizer), min_repeats, max_period, min_tokens)
    )


class LoopFraction(Metric):
    """Class form of :func:`loop_fraction` (states: loops, count)."""

    name = "loop_fraction"
    higher_is_better = False
    total: float
    count: int

    def __init__(self, min_repeats: int = 3, max_period: int = 16, min_tokens: int = 8) -> None:
        super().__init__()
        self.params = (min_repeats, max_period, min_tokens)
        self.add_state("total", 0.0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, outputs: Any) -> None:
        total, count = _loop_fraction_update(as_batch(outputs), *self.params)
        self._fold(total=total, count=count)

    def compute(self) -> float:
        return _mean_compute(self.total, self.count)


# -------------------------------------------------------- length-limit share
def _length_limit_update(finished: Sequence[bool] | np.ndarray) -> tuple[float, int]:
    if isinstance(finished, str | bytes):
        raise TypeError("finished must be a sequence of bools (True where the output ended with EOS), not a str")
    done = np.asarray(finished, dtype=bool).reshape(-1)
    return float((~done).sum()), int(done.size)


def length_limit_fraction(finished: Sequence[bool] | np.ndarray) -> float:
    """Share of outputs that stopped at the length limit instead of emitting EOS.

    ``finished[i]`` is True when output i ended with an end-of-sequence token.
    A high share from the very first check points at a setup problem (EOS
    masked out of the loss, pad token equal to EOS) rather than collapse.

    Returns NaN when there are no flags (nothing was measured).

    >>> length_limit_fraction([True, False, False, True])
    0.5
    """
    total, count = _length_limit_update(finished)
    return _mean_compute(total, count) if count else float("nan")


class LengthLimitFraction(Metric):
    """Class form of :func:`length_limit_fraction` (states: unfinished, count)."""

    name = "length_limit_fraction"
    higher_is_better = False  # outputs that run to the limit without EOS: loops (or a setup fault)
    total: float
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", 0.0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, finished: Sequence[bool] | np.ndarray) -> None:
        total, count = _length_limit_update(finished)
        self._fold(total=total, count=count)

    def compute(self) -> float:
        return _mean_compute(self.total, self.count) if self.count else float("nan")
