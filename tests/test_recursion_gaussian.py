"""Shumailov et al.'s Gaussian / GMM recursion: the closed form, the collapse, the controls, the guard."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collapseguard.demos.experiment import GenerationRecord
from collapseguard.demos.recursion import (
    expected_variance,
    expected_variance_sd,
    fit_gaussian,
    run_gaussian,
    run_gmm,
    simulate_variance_chains,
)

ROOT = Path(__file__).resolve().parents[1]
GAUSS_SEEDS, GAUSS_GENERATIONS = (0, 1), 100  # n = 300: the first critical comes at generation 78 and 10
GMM_SEEDS, GMM_GENERATIONS = (0, 1, 2), 22  # n = 500: the first critical comes at generation 15, 18 and 20


@functools.cache
def gauss(regime: str, seed: int) -> tuple[GenerationRecord, ...]:
    return tuple(run_gaussian(regime, seed, GAUSS_GENERATIONS))


@functools.cache
def gmm(regime: str, seed: int) -> tuple[GenerationRecord, ...]:
    pytest.importorskip("sklearn")
    return tuple(run_gmm(regime, seed, GMM_GENERATIONS))


def rise(run: tuple[GenerationRecord, ...], key: str) -> float:
    return run[-1].metrics[key] - run[0].metrics[key]


# ------------------------------------------------------------------ closed form
def test_ml_variance_divides_by_n_by_hand():
    x = np.array([1.0, 2.0, 4.0, 7.0])  # mean 3.5; squared deviations 6.25 + 2.25 + 0.25 + 12.25 = 21
    fit = fit_gaussian(x)
    assert fit.mean == 3.5
    assert fit.variance == 21 / 4  # the ML estimate, not the unbiased 21 / 3
    # one generation of the recursion: E[ML variance] = (n - 1) / n * sigma^2, here 3/4 * 2 = 1.5
    n, sigma2, chains = 4, 2.0, 40_000
    draws = np.random.default_rng(0).normal(0.0, math.sqrt(sigma2), (chains, n))
    fitted = draws.var(axis=1)
    se = math.sqrt(2 * (n - 1)) * sigma2 / n / math.sqrt(chains)  # SD of sigma^2 chi2(n-1) / n, over sqrt(chains)
    assert abs(fitted.mean() - expected_variance(1, n, sigma2)) < 4 * se
    assert abs(fitted.mean() - sigma2) > 40 * se  # and it is biased: far from the true 2.0


def test_closed_form_matches_simulated_chains():
    n, generations, chains = 20, 40, 4000
    sim = simulate_variance_chains(n, generations, chains=chains, seed=1)
    t = np.arange(generations + 1) + 1  # generation g has gone through g + 1 fits
    se = expected_variance_sd(t, n) / math.sqrt(chains)
    # 41 correlated comparisons at 4 standard errors: a false failure has probability below 0.3%
    assert np.all(np.abs(sim - expected_variance(t, n)) < 4 * se), (sim - expected_variance(t, n)) / se
    assert sim[-1] < 0.2  # ((n - 1) / n) ** 41 = 0.12: the variance did collapse


def test_variance_sd_formula_by_simulation():
    n, fits, chains = 5, 3, 200_000
    rng = np.random.default_rng(2)
    var = np.ones(chains)
    for _ in range(fits):
        var = (np.sqrt(var)[:, None] * rng.standard_normal((chains, n))).var(axis=1)
    # the SD formula is sqrt(E[var^2] - E[var]^2): check both moments, each within 4 of its standard errors
    second = ((n * n - 1) / (n * n)) ** fits
    assert abs(var.mean() - expected_variance(fits, n)) < 4 * var.std() / math.sqrt(chains)
    assert abs((var**2).mean() - second) < 4 * (var**2).std() / math.sqrt(chains)
    assert math.isclose(expected_variance_sd(fits, n) ** 2, second - expected_variance(fits, n) ** 2)


# ------------------------------------------------------------------- Gaussian
@pytest.mark.parametrize("seed", GAUSS_SEEDS)
def test_replace_degrades_while_fresh_does_not(seed):
    replace, fresh = gauss("replace", seed), gauss("fresh", seed)
    q0 = replace[0].quality
    assert (replace[0].quality, replace[0].metrics) == (fresh[0].quality, fresh[0].metrics)  # one generation 0
    assert min(r.metrics["fit_variance"] for r in replace) < 0.6
    assert max(r.quality for r in replace) > 1.15 * q0
    assert all(0.7 < r.metrics["fit_variance"] < 1.35 for r in fresh)
    assert max(r.quality for r in fresh) < 1.03 * q0
    # what an EarlyStopping(monitor="val_loss") user sees in replace: the loss improves as the model collapses
    assert min(r.val_loss for r in replace) < replace[0].val_loss - 0.2


@pytest.mark.parametrize("seed", GAUSS_SEEDS)
def test_guard_flags_gaussian_replace_and_spares_the_controls(seed):
    replace = gauss("replace", seed)
    assert any(r.severity == "critical" for r in replace)
    metrics = {a["metric"] for r in replace for a in r.alerts}
    assert "tail_mass" in metrics and "total_variance" in metrics  # early and mid phase
    for regime in ("fresh", "accumulate"):
        assert not [r.generation for r in gauss(regime, seed) if r.severity == "critical"], regime


# ------------------------------------------------------------------------ GMM
def test_gmm_loses_its_rare_mode_first():
    for seed in GMM_SEEDS:
        replace, fresh = gmm("replace", seed), gmm("fresh", seed)
        # held-out true samples of the 5% mode lose far more likelihood than the rest
        assert rise(replace, "fit_rare_nll") > max(2.0, 3 * rise(replace, "fit_bulk_nll")), seed
        assert abs(rise(fresh, "fit_rare_nll")) < 0.75, seed
    # the rare mode's fitted mass: a martingale under resampling, so look at the median over seeds
    ratio = lambda run: run[-1].metrics["fit_rare_mass"] / run[0].metrics["fit_rare_mass"]  # noqa: E731
    assert np.median([ratio(gmm("replace", s)) for s in GMM_SEEDS]) < 0.75
    assert 0.7 < np.median([ratio(gmm("fresh", s)) for s in GMM_SEEDS]) < 1.4


def test_guard_flags_gmm_replace_and_spares_the_controls():
    for seed in GMM_SEEDS:
        assert any(r.severity == "critical" for r in gmm("replace", seed)), seed
        assert not any(r.severity == "critical" for r in gmm("fresh", seed)), seed
    for seed in GMM_SEEDS[:2]:
        assert not any(r.severity == "critical" for r in gmm("accumulate", seed)), seed


# -------------------------------------------------------------------- example
def test_example_runs():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "examples/gaussian_collapse.py", "--seeds", "1", "--generations", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("gaussian", "gmm", "replace", "fresh", "accumulate", "closed form"):
        assert word in proc.stdout
