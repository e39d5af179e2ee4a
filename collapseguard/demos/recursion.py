"""Shumailov et al.'s recursion on a 1-D Gaussian and a 1-D Gaussian mixture, checked by the guard.

*The Curse of Recursion* (Shumailov et al., Nature 2024) shows model collapse in its
simplest form: fit a distribution by maximum likelihood, sample from the fit, fit the
next generation on those samples, and repeat. Generation 0 is the ML fit on ``n``
samples of the true distribution; generation ``g + 1`` is fit on ``n`` samples drawn
the way its regime says (see :data:`~collapseguard.demos.experiment.REGIMES`):

* ``replace``: from generation ``g``'s fit only -- the collapsing regime;
* ``fresh``: from the true distribution again (a control);
* ``accumulate``: the ``n`` true samples plus every generation's ``n`` samples so far
  (Gerstgrasser et al., 2024: a control whose error stays bounded).

Two scenarios:

* ``"gaussian"``: the truth is N(0, 1); the model is one Gaussian (ML mean and the
  *biased*, divide-by-``n`` variance). In ``replace`` the fitted variance is a product of
  independent ``chi2(n - 1) / n`` factors, so its expectation shrinks geometrically,
  ``E[sigma2_t] = ((n - 1) / n) ** t * sigma2_0`` (:func:`expected_variance`), while its
  logarithm is a random walk with drift ``-2 / n`` and variance ``2 / n`` per generation: the
  *median* shrinks twice as fast as the mean (``exp(-2 t / n)``), every chain reaches 0
  eventually, but on a time scale of ``n`` generations and with a wide spread between seeds.
* ``"gmm"``: the truth is :data:`TRUE_GMM`, four unit-variance components at 0, 5, -5 and
  10 with weights 0.5 / 0.3 / 0.15 / 0.05 (5 standard deviations apart: well separated, and
  the rarest is the farthest out); the model is scikit-learn's ``GaussianMixture`` with 4
  components (EM from k-means starts, a fixed seed per fit). In ``replace`` the small
  components go first, for two reasons. Each component's variance is refit on about
  ``n * w`` samples, so it shrinks like the 1-D case with ``n * w`` in place of ``n``: ten
  times faster for ``w = 0.05`` than for ``w = 0.5``. And each weight drifts like a
  Wright-Fisher allele frequency (variance ``w (1 - w) / n`` per generation), so a small
  component is lost (absorbed at 0) long before a large one. The weight's *mean* over seeds
  does not fall -- resampling keeps it a martingale -- so the loss shows in the median and in
  the share of seeds that lost the mode, and most clearly in the held-out likelihood of the
  rare mode: ``fit_rare_nll`` (true samples beyond :data:`RARE_MODE_EDGE`) rises many times
  more than ``fit_bulk_nll`` (the rest). ``fit_min_weight`` is recorded too but is a poor
  measure: once a mode has drained, EM splits another component and the smallest weight
  jumps back up.

At every generation a :class:`~collapseguard.detection.monitor.CollapseMonitor` built on held-out
true samples (the gold set, the same for every generation and regime of a seed) checks
``check_size`` samples of the generation's fit, with the gold samples' log-likelihood
under the fit as ``gold_loglik``. Each generation gives one
:class:`~collapseguard.demos.experiment.GenerationRecord`; ``metrics`` holds what the guard
measured plus the fit's own numbers under ``fit_*`` keys: ``fit_mean``, ``fit_variance``,
``fit_tail_mass`` (the fit's mass outside the truth's 1st..99th percentiles; 0.02 in truth)
and, for the mixture, ``fit_min_weight``, ``fit_rare_mass`` (mass beyond
:data:`RARE_MODE_EDGE`), ``fit_rare_nll`` and ``fit_bulk_nll``.

Everything here needs only numpy and scipy, except :func:`fit_gmm`, which imports
scikit-learn when first called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import norm

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.detection.alerts import silenced_alerts
from collapseguard.detection.monitor import CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet

SCENARIOS = ("gaussian", "gmm")
DEFAULT_N = {"gaussian": 300, "gmm": 500}
"""Training samples per generation: large enough that the controls draw no false critical alert
(see :func:`run_gaussian`), small enough that ``replace`` collapses within a few hundred generations."""

# Independent random streams of one seed: a draw in one never shifts another, so every regime of a
# seed shares its gold set, test set and generation-0 training data (paired comparisons).
_GOLD, _TEST, _TRAIN, _FRESH, _MODEL, _CHECK, _VAL = range(7)


@dataclass(frozen=True)
class Mixture:
    """A 1-D Gaussian mixture (one component: a Gaussian): the truth, or one generation's fit.

    >>> Mixture.gaussian(0.0, 4.0).variance
    4.0
    """

    weights: tuple[float, ...]
    means: tuple[float, ...]
    variances: tuple[float, ...]

    @classmethod
    def gaussian(cls, mean: float = 0.0, variance: float = 1.0) -> Mixture:
        return cls((1.0,), (float(mean),), (float(variance),))

    @property
    def mean(self) -> float:
        return float(np.dot(self.weights, self.means))

    @property
    def variance(self) -> float:
        """Total variance: within-component plus between-component."""
        w, mu, var = (np.asarray(a) for a in (self.weights, self.means, self.variances))
        return float(w @ (var + mu**2) - (w @ mu) ** 2)

    def sample(self, size: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), size=size, p=np.asarray(self.weights) / sum(self.weights))
        return np.asarray(self.means)[comp] + np.sqrt(np.asarray(self.variances))[comp] * rng.standard_normal(size)

    def loglik(self, x: np.ndarray) -> np.ndarray:
        """Log-density of each point."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        mu, var = np.asarray(self.means), np.asarray(self.variances)
        logp = -0.5 * ((x - mu) ** 2 / var + np.log(2 * np.pi * var))  # scipy's logpdf, without its overhead
        return logsumexp(logp + np.log(np.asarray(self.weights)), axis=1)

    def cdf(self, x: float) -> float:
        return float(np.dot(self.weights, norm.cdf(x, loc=self.means, scale=np.sqrt(self.variances))))

    def quantile(self, q: float) -> float:
        sd = math.sqrt(self.variance)
        lo, hi = min(self.means) - 40 * sd, max(self.means) + 40 * sd
        return float(brentq(lambda x: self.cdf(x) - q, lo, hi, xtol=1e-12))

    def mass_outside(self, lo: float, hi: float) -> float:
        """Probability below ``lo`` or above ``hi``."""
        return self.cdf(lo) + 1.0 - self.cdf(hi)


TRUE_GAUSSIAN = Mixture.gaussian(0.0, 1.0)
"""The truth of the ``"gaussian"`` scenario: N(0, 1)."""

TRUE_GMM = Mixture(weights=(0.5, 0.3, 0.15, 0.05), means=(0.0, 5.0, -5.0, 10.0), variances=(1.0, 1.0, 1.0, 1.0))
"""The truth of the ``"gmm"`` scenario: the rarest component (5%) is the farthest out, at +10."""

RARE_MODE_EDGE = 7.5
"""Midway between :data:`TRUE_GMM`'s components at 5 and 10: the mass above it is the rare mode's (0.0516 in truth)."""


def fit_gaussian(x: np.ndarray) -> Mixture:
    """The ML Gaussian: the sample mean and the biased variance ``sum((x - mean) ** 2) / n``.

    >>> fit_gaussian(np.array([0.0, 2.0])).variance  # divide by n = 2, not n - 1 = 1
    1.0
    """
    x = np.asarray(x, dtype=np.float64)
    return Mixture.gaussian(float(x.mean()), float(x.var()))  # ddof=0: the ML estimate


def fit_gmm(x: np.ndarray, n_components: int = 4, seed: int = 0, init: Mixture | None = None) -> Mixture:
    """The ML Gaussian mixture by EM (scikit-learn ``GaussianMixture``), with a fixed seed.

    Without ``init``: the best of 5 EM runs from k-means starts. One run is not enough: k-means
    prefers splitting the big central component to separating the 5% one, and in about 1 fit in
    5 (n = 500) EM then stays in a local optimum that merges the +5 and +10 components -- a
    spurious tail loss that even the ``fresh`` control would show. With ``init`` (a previous fit):
    one EM run started from it (see :func:`run_gaussian` for where that is used).
    """
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError:
        raise ImportError("the 'gmm' scenario fits with scikit-learn's GaussianMixture: pip install scikit-learn") \
            from None
    kwargs: dict[str, Any] = {"n_init": 5}
    if init is not None:
        kwargs = {"n_init": 1, "init_params": "random_from_data", "weights_init": np.asarray(init.weights),
                  "means_init": np.asarray(init.means)[:, None],
                  "precisions_init": 1.0 / np.asarray(init.variances).reshape(-1, 1, 1)}
    gm = GaussianMixture(n_components=n_components, covariance_type="full", random_state=seed, max_iter=500, **kwargs)
    gm.fit(np.asarray(x, dtype=np.float64).reshape(-1, 1))
    order = np.argsort(gm.means_.ravel())  # a canonical order: EM's labels are arbitrary
    return Mixture(tuple(gm.weights_[order].tolist()), tuple(gm.means_.ravel()[order].tolist()),
                   tuple(gm.covariances_.reshape(-1)[order].tolist()))


# ------------------------------------------------------------------ closed form
def expected_variance(t: int | np.ndarray, n: int, sigma2_0: float = 1.0) -> float | np.ndarray:
    r"""Expected ML variance after ``t`` refits on ``n`` samples each (the ``replace`` regime).

    Each ML fit of ``n`` samples from a Gaussian of variance :math:`\sigma^2` has
    :math:`\hat\sigma^2 = \sigma^2\,\chi^2_{n-1}/n`, an expectation of :math:`\frac{n-1}{n}\sigma^2`,
    so by the tower rule

    .. math:: E[\sigma^2_t] = \Big(\frac{n-1}{n}\Big)^t \sigma^2_0 .

    ``sigma2_0`` is the variance of the distribution the first of the ``t`` fits sampled from.
    In the numbering of :func:`run_gaussian` (generation 0 is already one fit, on the truth of
    variance ``sigma2``) generation ``g`` has the expectation ``expected_variance(g + 1, n, sigma2)``;
    given generation 0's fitted variance ``s0`` it is ``expected_variance(g, n, s0)``.

    >>> expected_variance(1, 2)  # one fit on 2 samples halves the variance on average
    0.5
    >>> round(float(expected_variance(100, 100)), 4)  # about exp(-1) after n refits
    0.366
    """
    power = np.asarray(t, dtype=np.float64) if np.ndim(t) else t  # arrays of generations work too
    return ((n - 1) / n) ** power * sigma2_0


def expected_variance_sd(t: int | np.ndarray, n: int, sigma2_0: float = 1.0) -> float | np.ndarray:
    r"""Standard deviation, across chains, of the ML variance after ``t`` refits (``replace``).

    The factors :math:`\chi^2_{n-1}/n` are independent with second moment :math:`(n^2-1)/n^2`, so

    .. math:: \mathrm{SD}[\sigma^2_t] = \sigma^2_0 \sqrt{\Big(\frac{n^2-1}{n^2}\Big)^t - \Big(\frac{n-1}{n}\Big)^{2t}} .

    For ``t`` well below ``n ** 2`` it grows while the mean shrinks (the distribution turns skewed,
    nearly log-normal): the standard error of a mean over ``k`` chains is
    ``expected_variance_sd(t, n) / sqrt(k)``.

    >>> round(float(expected_variance_sd(1, 2)), 4)  # chi2(1) / 2: mean 0.5, SD sqrt(2) / 2
    0.7071
    """
    power = np.asarray(t, dtype=np.float64) if np.ndim(t) else t
    return np.sqrt(((n * n - 1) / (n * n)) ** power - ((n - 1) / n) ** (2 * power)) * sigma2_0


def simulate_variance_chains(n: int, generations: int, chains: int = 2000, seed: int = 0,
                             sigma2: float = 1.0) -> np.ndarray:
    """Mean fitted variance per generation over ``chains`` independent ``replace`` chains.

    Every chain runs the recursion for real (draw ``n`` normal samples from the current fit, refit
    mean and biased variance), all chains at once, so the closed form can be checked cheaply. Entry
    ``g`` (``g = 0 .. generations``) is generation ``g`` in :func:`run_gaussian`'s numbering and
    estimates ``expected_variance(g + 1, n, sigma2)`` with standard error
    ``expected_variance_sd(g + 1, n, sigma2) / sqrt(chains)``.

    >>> sim = simulate_variance_chains(10, 3, chains=4000, seed=0)
    >>> bool(abs(sim[3] - expected_variance(4, 10)) < 0.03)
    True
    """
    rng = np.random.default_rng(seed)
    mean, var = np.zeros(chains), np.full(chains, float(sigma2))
    out = np.empty(generations + 1)
    for g in range(generations + 1):
        x = mean[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((chains, n))
        mean, var = x.mean(axis=1), x.var(axis=1)
        out[g] = var.mean()
    return out


# ----------------------------------------------------------------- the runs
def _rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *more])


def _exp(x: float) -> float:
    # a fit collapsed onto a point gives held-out data an NLL beyond what exp() can represent: report inf
    return math.exp(x) if x < 709.0 else math.inf


def _sample_pool(sources: list[Mixture], size: int, rng: np.random.Generator) -> np.ndarray:
    """Samples of the equal-weight mixture of ``sources``: how the accumulated pool was drawn."""
    counts = rng.multinomial(size, [1.0 / len(sources)] * len(sources))
    return np.concatenate([s.sample(int(c), rng) for s, c in zip(sources, counts, strict=True)])


def run_gaussian(regime: str = "replace", seed: int = 0, generations: int = 100, *, n: int | None = None,
                 mixture: bool = False, thresholds: Thresholds | str | dict[str, Any] | None = "balanced",
                 check_size: int = 2000, gold_size: int | None = None, test_size: int = 5000,
                 val_size: int = 2000, quiet: bool = True) -> list[GenerationRecord]:
    """Run generation 0 and ``generations`` more of one regime; one record per generation.

    Args:
        regime: ``"replace"``, ``"fresh"`` or ``"accumulate"``.
        seed: selects the gold set, the test set, the training data and every sample drawn.
        generations: refits after generation 0 (``generations + 1`` records).
        n: training samples per generation (the pool grows by ``n`` per generation in
            ``accumulate``); default :data:`DEFAULT_N` of the scenario. It sets the speed of
            collapse (``replace`` needs on the order of ``n`` generations) and how much the
            controls' fits wobble (relative SD ``sqrt(2 / n)`` in variance, about 3.4 times that
            in the guard's ``tail_mass``): below about 200 the ``fresh`` control draws false
            critical ``tail_mass`` alerts.
        mixture: fit :data:`TRUE_GMM` with a 4-component GMM (scenario ``"gmm"``) instead of
            N(0, 1) with one Gaussian (``"gaussian"``). Every GMM fit runs EM from 5 k-means starts,
            except in ``accumulate`` after generation 0, where one EM run starts from the previous
            fit: k-means restarts on the growing pool would make that control quadratic in time.
        thresholds: the guard's thresholds (a preset name, a dict or :class:`Thresholds`).
        check_size: samples of each generation the guard checks.
        gold_size: held-out true samples in the gold set (default ``check_size``, so the guard's
            gold reference uses the whole gold set).
        test_size: separate held-out true samples for ``quality``.
        val_size: held-out samples, drawn like this generation's training data, for ``val_loss``.
        quiet: keep the guard's alert log lines out of the ``collapseguard`` logger during the run
            (``CollapseWarning`` is always silenced: the records carry every alert).

    ``quality`` is ``exp`` of the mean NLL of the test set under the fit (lower is better; a
    perfect N(0, 1) fit gives ``sqrt(2 pi e) = 4.13``); ``val_loss`` is the mean NLL under the fit of
    samples drawn from the previous fit (``replace``), the truth (``fresh``) or the accumulated
    pool (``accumulate``) -- it improves as ``replace`` collapses, which is the point.

    >>> recs = run_gaussian("replace", seed=0, generations=2, n=50, check_size=200)
    >>> [r.generation for r in recs], recs[0].scenario, recs[0].regime
    ([0, 1, 2], 'gaussian', 'replace')
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r}: choose one of {REGIMES}")
    truth, scenario = (TRUE_GMM, "gmm") if mixture else (TRUE_GAUSSIAN, "gaussian")
    n = DEFAULT_N[scenario] if n is None else n
    if n < 2 or generations < 0:
        raise ValueError(f"need n >= 2 and generations >= 0, got n={n}, generations={generations}")

    def fit(x: np.ndarray, g: int, previous: Mixture | None) -> Mixture:
        if not mixture:
            return fit_gaussian(x)
        # accumulate: the previous fit saw all but the newest n samples of the pool, the natural EM start
        warm = previous if regime == "accumulate" else None
        return fit_gmm(x, len(truth.weights), seed=seed * 100_003 + g, init=warm)

    lo, hi = truth.quantile(0.01), truth.quantile(0.99)  # the truth's outer 2%: where tail loss shows
    gold = truth.sample(gold_size or check_size, _rng(seed, _GOLD))
    test = truth.sample(test_size, _rng(seed, _TEST))
    rare = test > RARE_MODE_EDGE
    monitor = CollapseMonitor(GoldSet.from_arrays(gold, name=f"{scenario}-gold-seed{seed}"), thresholds)
    real = truth.sample(n, _rng(seed, _TRAIN))
    pool, fits, records = [real], [], []
    with silenced_alerts(quiet):
        for g in range(generations + 1):
            if g == 0 or regime == "fresh":
                data, source = (real if g == 0 else truth.sample(n, _rng(seed, _FRESH, g))), [truth]
            elif regime == "replace":
                data, source = fits[-1].sample(n, _rng(seed, _MODEL, g)), [fits[-1]]
            else:  # accumulate: the real samples and every generation's samples so far
                pool.append(fits[-1].sample(n, _rng(seed, _MODEL, g)))
                data, source = np.concatenate(pool), [truth, *fits]
            model = fit(data, g, fits[-1] if fits else None)
            fits.append(model)
            val = _sample_pool(source, val_size, _rng(seed, _VAL, g))
            result = monitor.check(model.sample(check_size, _rng(seed, _CHECK, g)), step=g,
                                   gold_loglik=model.loglik(gold))
            test_ll = model.loglik(test)
            metrics = dict(result.metrics)
            metrics.update(fit_mean=model.mean, fit_variance=model.variance, fit_tail_mass=model.mass_outside(lo, hi))
            if mixture:  # the rare mode against the rest: weight, mass and the held-out likelihood of each
                metrics.update(fit_min_weight=min(model.weights), fit_rare_mass=1.0 - model.cdf(RARE_MODE_EDGE),
                               fit_rare_nll=-float(test_ll[rare].mean()), fit_bulk_nll=-float(test_ll[~rare].mean()))
            records.append(GenerationRecord(
                scenario=scenario, regime=regime, seed=seed, generation=g,
                quality=_exp(-float(test_ll.mean())), val_loss=-float(model.loglik(val).mean()),
                health=result.health, severity=result.severity, alerts=[a.to_dict() for a in result.alerts],
                metrics=metrics))
    return records


def run_gmm(regime: str = "replace", seed: int = 0, generations: int = 100, **kwargs: Any) -> list[GenerationRecord]:
    """:func:`run_gaussian` with ``mixture=True``: the ``"gmm"`` scenario (needs scikit-learn)."""
    return run_gaussian(regime, seed, generations, mixture=True, **kwargs)


def run_scenario(scenario: str, regime: str = "replace", seed: int = 0, generations: int = 100,
                 **kwargs: Any) -> list[GenerationRecord]:
    """Run scenario ``"gaussian"`` or ``"gmm"`` by name."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario={scenario!r}: choose one of {SCENARIOS}")
    runner = run_gmm if scenario == "gmm" else run_gaussian
    return runner(regime, seed, generations, **kwargs)
