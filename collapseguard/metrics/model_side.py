"""Model-side statistics on gold continuations, split into frequency bands.

The callbacks run the model teacher-forced over gold prompt + continuation and
hand over, for every continuation token, its negative log-likelihood and the
entropy of the model's next-token distribution. This module turns those into
perplexity and entropy per gold frequency band. Rising tail perplexity while
head perplexity holds or falls is the model forgetting rare human tokens: the
early phase, often visible before the outputs' own diversity moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from collapseguard.metrics.base import Metric, direction_word, from_direction_word
from collapseguard.metrics.gold_relative import BAND_NAMES, FrequencyBands


@dataclass(frozen=True)
class ModelStats:
    """Per-token statistics of a model on gold continuations (one array per text).

    Attributes:
        token_ids: the continuation tokens that were scored.
        nll: negative log-likelihood of each token, in nats.
        entropy: entropy of the model's next-token distribution at each token, in nats.
    """

    token_ids: Sequence[np.ndarray]
    nll: Sequence[np.ndarray]
    entropy: Sequence[np.ndarray]

    def __post_init__(self) -> None:
        if not len(self.token_ids) == len(self.nll) == len(self.entropy):
            raise ValueError("token_ids, nll and entropy must hold one array per text")
        for ids, nll, ent in zip(self.token_ids, self.nll, self.entropy, strict=True):
            if not np.shape(ids) == np.shape(nll) == np.shape(ent):
                raise ValueError("token_ids, nll and entropy arrays must align token for token")


def _gold_likelihood_update(stats: ModelStats, bands: FrequencyBands) -> dict[str, np.ndarray]:
    if not stats.token_ids:
        return {"nll_sum": np.zeros(3), "entropy_sum": np.zeros(3), "count": np.zeros(3)}
    ids = np.concatenate([np.asarray(t, dtype=np.int64) for t in stats.token_ids]).astype(np.uint64)
    nll = np.concatenate([np.asarray(x, dtype=np.float64) for x in stats.nll])
    ent = np.concatenate([np.asarray(x, dtype=np.float64) for x in stats.entropy])
    ok = np.isfinite(nll) & np.isfinite(ent)  # a NaN token must not poison the sums
    band = bands.lookup(ids)[ok]
    return {
        "nll_sum": np.bincount(band, weights=nll[ok], minlength=3),
        "entropy_sum": np.bincount(band, weights=ent[ok], minlength=3),
        "count": np.bincount(band, minlength=3).astype(np.float64),
    }


def _gold_likelihood_compute(nll_sum: np.ndarray, entropy_sum: np.ndarray, count: np.ndarray) -> dict[str, float]:
    def ppl(total: float, n: float) -> float:
        return float(np.exp(total / n)) if n > 0 else float("nan")

    out = {"gold_ppl": ppl(nll_sum.sum(), count.sum())}
    for i, name in enumerate(BAND_NAMES):
        out[f"gold_ppl_{name}"] = ppl(nll_sum[i], count[i])
    total = count.sum()
    out["next_token_entropy"] = float(entropy_sum.sum() / total) if total > 0 else float("nan")
    # mean NLL minus mean entropy: 0 for a model whose next-token distribution is the human one (in
    # expectation), positive when it is surer of itself than human text warrants -- a narrowed distribution
    out["overconfidence"] = float((nll_sum.sum() - entropy_sum.sum()) / total) if total > 0 else float("nan")
    return out


def banded_perplexity(stats: ModelStats, bands: FrequencyBands) -> dict[str, float]:
    r"""Gold perplexity overall and per band, mean next-token entropy, and overconfidence (mean NLL minus mean
    entropy, in nats: how much surer of itself the model is than the human text warrants).

    .. math:: \mathrm{PPL}_b = \exp\Big(\frac{\sum_{t \in b} \mathrm{nll}_t}{|b|}\Big)

    Tokens with a non-finite nll or entropy are skipped. A band with no token
    gives NaN.
    """
    return _gold_likelihood_compute(**_gold_likelihood_update(stats, bands))


class GoldLikelihood(Metric):
    """Class form of :func:`banded_perplexity` (states: per-band sums and counts)."""

    name = "gold_likelihood"
    higher_is_better = False  # compute(): gold_ppl
    outputs: ClassVar[dict[str, bool | None]] = {"gold_ppl": False, **{f"gold_ppl_{band}": False for band in BAND_NAMES},
               "next_token_entropy": True,  # a sharper next-token distribution: the model narrows
               "overconfidence": False}
    nll_sum: np.ndarray
    entropy_sum: np.ndarray
    count: np.ndarray

    def __init__(self, bands: FrequencyBands) -> None:
        super().__init__()
        self.bands = bands
        self.add_state("nll_sum", np.zeros(3), "sum")
        self.add_state("entropy_sum", np.zeros(3), "sum")
        self.add_state("count", np.zeros(3), "sum")

    def update(self, stats: ModelStats) -> None:
        self._fold(**_gold_likelihood_update(stats, self.bands))

    def compute_all(self) -> dict[str, float]:
        """Gold perplexity overall and per frequency band, next-token entropy and overconfidence."""
        return _gold_likelihood_compute(self.nll_sum, self.entropy_sum, self.count)

    def compute(self) -> float:
        return self.compute_all()["gold_ppl"]


class GoldNLL(Metric):
    """Mean negative log-likelihood a model assigns to held-out gold samples (any modality).

    For models that are not text LMs: the user's ``score_fn`` returns one
    log-likelihood (or any higher-is-better held-out score) per gold sample.
    NaN (and +inf) scores are skipped; a log-likelihood of -inf -- a gold sample the
    model deems impossible, as a fit whose variance collapsed to zero does -- makes
    the NLL infinite, which the detectors judge critical rather than ignore.

    >>> m = GoldNLL(); m.update([-1.0, -3.0, float("nan")]); m.compute()
    2.0
    >>> m.update([float("-inf")]); m.compute()
    inf
    """

    name = "gold_nll"
    higher_is_better = False
    total: float
    count: int

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", 0.0, "sum")
        self.add_state("count", 0, "sum")

    def update(self, loglik: Sequence[float] | np.ndarray) -> None:
        x = np.asarray(loglik, dtype=np.float64).reshape(-1)
        x = x[~np.isnan(x) & (x != np.inf)]
        self._fold(total=float(-x.sum()), count=int(x.size))

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


class ReportedMean(Metric):
    """The mean of a statistic the trainer itself reports, over the logging windows of one check.

    For what the trainer measures and the guard cannot see from outputs: the policy's mean per-token entropy
    on its own completions (TRL's ``entropy``) and the share of prompt groups whose rewards are all equal
    (TRL's ``frac_reward_zero_std``). Non-finite reports are skipped; the mean is taken over the sorted values,
    so merging shards in any order gives the same number.

    ``direction`` (``"higher_is_better"``, ``"lower_is_better"``, or a bool as ``higher_is_better``) defaults to
    the declared one for the statistics in :attr:`outputs`, else to ``"higher_is_better"``.

    >>> m = ReportedMean("policy_entropy"); m.update([5.5, float("nan"), 4.5]); m.compute()
    5.0
    """

    higher_is_better = True
    outputs: ClassVar[dict[str, bool | None]] = {"policy_entropy": True,  # a policy that turns deterministic stops exploring
               "frac_reward_zero_std": False}  # groups that give GRPO no learning signal
    """The statistics a trainer reports that collapseguard knows, with their directions."""
    values: list[float]

    def __init__(self, name: str, direction: str | bool | None = None) -> None:
        super().__init__()
        known = type(self).outputs.get(name, True)
        hib = known if direction is None else from_direction_word(direction, "ReportedMean")
        if name in type(self).outputs and hib is not known:
            raise ValueError(f"ReportedMean: direction={direction!r} is invalid for {name}: it is declared "
                             f"{direction_word(known)}. Drop direction, or report it under another name")
        self.name = name
        self.higher_is_better = hib
        self.direction = direction_word(hib)
        self.add_state("values", [], "cat")

    def update(self, values: Sequence[float] | np.ndarray | None = None, *,
               reported: Mapping[str, Sequence[float]] | None = None) -> None:
        """Fold in reported values: ``values`` themselves, or this statistic's entry of ``reported`` (everything the
        trainer reported, by name: what a suite hands each of its reported statistics); nothing when it is absent."""
        if values is None:
            values = (reported or {}).get(self.name, ())
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        self._fold(values=[float(v) for v in x if np.isfinite(v)])

    def compute(self) -> float:
        return math.fsum(sorted(self.values)) / len(self.values) if self.values else float("nan")
