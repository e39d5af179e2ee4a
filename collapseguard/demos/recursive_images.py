"""A VAE retrained recursively on its own images: the ``"vae-digits"`` scenario on real handwritten digits.

The data is scikit-learn's bundled handwritten digits (``load_digits``: 1,797 real 8x8 scans with 17 grey
levels, shipped inside the wheel, so nothing is downloaded). It is split once, deterministically, into
four disjoint parts (:func:`digits_data`): the human **train** pool, a human **val** set, the guard's
**gold** set and the **test** set (ground truth: no model and no guard ever trains or calibrates on it).

The model (:class:`DigitsVAE`) is a small MLP VAE in plain torch (latent 8, hidden 128, Adam 5e-3, batches
of 128). Its decoder is a Bernoulli decoder on pixels scaled to [0, 1], read as ``Binomial(16, p)`` on the
17 original grey levels: the loss is the usual Bernoulli cross-entropy times 16 plus a constant, and the
ELBO bounds a proper discrete log-likelihood, so ``exp(-ELBO / 64)`` is a per-pixel perplexity (a uniform
guess over the grey levels scores 17; the trained model about 5). That is ``quality``.

Generation 0 trains on ``samples`` human train images; generation ``g + 1`` on ``samples`` images drawn
the way its regime says (:data:`~collapseguard.demos.experiment.REGIMES`):

* ``replace``: images sampled from generation ``g``'s model only (``z ~ N(0, I)``, then grey levels
  ``~ Binomial(16, p)``: the model's own distribution), trained from scratch -- the collapsing regime of
  Shumailov et al.;
* ``fresh``: a fresh random subset of the human train pool (a control);
* ``accumulate``: the generation-0 human images plus every generation's samples so far
  (Gerstgrasser et al., 2024: a control whose error stays bounded).

Every generation trains for the same number of optimiser steps (``epochs`` passes over ``samples``
images), so an ``accumulate`` pool that grows does not make later generations slower (``pool_epochs=True``
trains on the pool as Gerstgrasser et al. do; its quality then improves on generation 0's).

At every generation a :class:`~collapseguard.detection.monitor.CollapseMonitor` (the engine behind the Lightning
callback) checks ``check_size`` images sampled from the model against the gold set, with the gold images'
ELBO per pixel as ``gold_loglik``; one :class:`~collapseguard.demos.experiment.GenerationRecord` per generation.

What the guard sees (4 seeds x 8 generations, balanced thresholds, default settings):

* ``replace`` collapses: sample variance falls to ~50% of generation 0's and test perplexity rises 2.4-3x;
  the guard warns at generation 1-2 and turns critical at 5-6. Effective rank does *not* fall in pixel
  space: the Binomial pixel noise spreads over all directions as the digit structure fades (with
  ``sampling="mean"`` it falls ~25%). Its ``val_loss`` (on its own samples) *improves*.
* The VAE's samples hold ~80% of gold's pixel variance from generation 0 on, close to the 75% warn bound,
  so judged against gold alone (``reference="gold"``) ``accumulate`` -- whose variance drifts ~15% down while
  test perplexity rises 3-14% -- warns at most generations. The default ``reference="gen0"`` judges diversity
  against generation 0's own check (the library's reference profile); then the controls raise no alert.
* The guard judges the gold ELBO per pixel (it divides the per-image log-likelihood by the dimension): per
  image (~100 nats) a 0.22-nat rise would already mean perplexity x1.25, and the controls' run-to-run noise
  would turn ``gold_nll`` critical.
* In a PCA feature space of gold (``features=16``) ``tail_mass`` is critical from generation 0 on: the VAE
  never reaches gold's tails along its principal axes (in pixel space, pixel noise lands samples outside
  the gold ellipsoid, which hides that).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from collapseguard.demos.experiment import REGIMES, GenerationRecord
from collapseguard.detection.alerts import CollapseWarning
from collapseguard.detection.monitor import CollapseMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet

SCENARIO = "vae-digits"
LEVELS = 16  # load_digits pixels are integer grey levels 0..16
PIXELS = 64
BATCH_SIZE = 128

# Independent random streams of one seed (see collapseguard.demos.recursion): a draw in one never shifts another.
_INIT, _TRAIN, _FRESH, _MODEL, _CHECK, _VAL, _EVAL = range(7)


# ------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DigitsData:
    """The real digits, scaled to [0, 1] (float32, (n, 64)), in four disjoint parts."""

    train: np.ndarray
    val: np.ndarray
    gold: np.ndarray
    test: np.ndarray


@functools.lru_cache(maxsize=4)
def digits_data(gold_size: int = 300, test_size: int = 300, val_size: int = 200, split_seed: int = 0) -> DigitsData:
    """Split ``load_digits()`` by one fixed permutation: test, gold, val, and the rest is the train pool.

    The split does not depend on a run's seed, so every seed and regime judges against the same gold
    and test images (runs differ in initialisation and in what is sampled).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the vae-digits scenario uses scikit-learn's bundled digits: pip install scikit-learn") \
            from None
    x = (load_digits().data / LEVELS).astype(np.float32)
    order = np.random.default_rng(split_seed).permutation(len(x))
    cuts = np.cumsum([test_size, gold_size, val_size])
    if cuts[-1] >= len(x):
        raise ValueError(f"test + gold + val = {cuts[-1]} leaves no train images of {len(x)}")
    test, gold, val, train = np.split(order, cuts)
    return DigitsData(*(_readonly(x[np.sort(i)]) for i in (train, val, gold, test)))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# ------------------------------------------------------------------------------------------------ model
def binomial_loglik(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Binomial(16 x; 16, sigmoid(logits)) summed over pixels, per image (x in [0, 1]).

    ``lgamma`` makes the normalising constant exact for the 17 grey levels and smooth in between.
    """
    k = x * LEVELS
    log_choose = torch.lgamma(torch.tensor(LEVELS + 1.0)) - torch.lgamma(k + 1) - torch.lgamma(LEVELS - k + 1)
    # k log p + (16 - k) log(1 - p) = -16 * BCE(logits, x)
    ll = log_choose - LEVELS * nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return ll.sum(dim=-1)


class DigitsVAE(nn.Module):
    """MLP VAE for 64-pixel images: encoder 64-h-h-2L, decoder L-h-h-64 logits, prior N(0, I)."""

    def __init__(self, latent: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(PIXELS, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, PIXELS))

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None, draws: int = 1) -> torch.Tensor:
        """The ELBO per image in nats (a lower bound on log p(x)), averaged over ``draws`` z ~ q(z | x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=-1)
        rec = torch.zeros(x.shape[0])
        for _ in range(draws):
            eps = torch.randn(mu.shape, generator=generator)
            rec = rec + binomial_loglik(x, self.decoder(mu + (0.5 * logvar).exp() * eps))
        return rec / draws - kl

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, mode: Literal["sample", "mean"] = "sample") -> np.ndarray:
        """``n`` images: z ~ N(0, I), then grey levels ~ Binomial(16, p) / 16 (``"sample"``) or p (``"mean"``)."""
        p = torch.sigmoid(self.decoder(torch.randn(n, self.latent, generator=generator)))
        if mode == "mean":
            return p.numpy()
        return (torch.binomial(torch.full_like(p, float(LEVELS)), p, generator=generator) / LEVELS).numpy()


@torch.no_grad()
def mean_elbo(model: DigitsVAE, x: np.ndarray, seed: int, draws: int = 8) -> np.ndarray:
    """ELBO per image (nats, numpy), with a fixed z stream so equal models give equal numbers."""
    model.eval()
    elbo = model.elbo(torch.tensor(x, dtype=torch.float32), torch.Generator().manual_seed(seed), draws)
    return elbo.numpy().astype(np.float64)


def train_vae(data: np.ndarray, seed: int, steps: int, *, latent: int = 8, hidden: int = 128,
              batch_size: int = BATCH_SIZE, lr: float = 5e-3, init: DigitsVAE | None = None) -> DigitsVAE:
    """Train a VAE (from scratch, or continuing ``init``) for ``steps`` Adam steps on shuffled minibatches."""
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, the caller's global RNG untouched
        torch.manual_seed(seed)
        model = DigitsVAE(latent, hidden)
    if init is not None:
        model.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)  # one fused update, not one per tensor
    x = torch.tensor(np.asarray(data), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    order = torch.randperm(len(x), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        batch = x[order[pos:pos + batch_size]]
        pos += batch_size
        loss = -model.elbo(batch, gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------ runs
def _seed(seed: int, stream: int, *more: int) -> int:
    """A 63-bit seed for torch from numpy's SeedSequence of (seed, stream, ...)."""
    return int(np.random.SeedSequence([seed, stream, *more]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def _quiet_run(quiet: bool) -> Iterator[None]:
    """One torch thread, no CollapseWarning (records carry the alerts), and with ``quiet`` no alert log lines."""
    log = logging.getLogger("collapseguard")
    level, threads = log.level, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest and makes runs reproducible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        if quiet:
            log.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            log.setLevel(level)
            torch.set_num_threads(threads)


class _Pca:
    """Projection on the top principal axes of gold, fit once (a fixed feature space for the guard)."""

    def __init__(self, gold: np.ndarray, dims: int) -> None:
        self.mean = gold.mean(axis=0)
        _, _, vt = np.linalg.svd(gold - self.mean, full_matrices=False)
        self.axes = vt[:dims].T

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.axes


@functools.lru_cache(maxsize=8)
def _generation0(seed: int, samples: int, steps: int, latent: int, hidden: int, lr: float) -> dict[str, torch.Tensor]:
    """Generation 0's weights: the same in every regime of a seed, so they are trained once per process."""
    real = _human(seed, samples, _TRAIN)
    return train_vae(real, _seed(seed, _INIT, 0), steps, latent=latent, hidden=hidden, lr=lr).state_dict()


def _human(seed: int, n: int, *key: int) -> np.ndarray:
    """``n`` distinct human train images, drawn by (seed, key)."""
    pool = digits_data().train
    return pool[np.sort(np.random.default_rng([seed, *key]).choice(len(pool), n, replace=False))]


def run_vae(regime: str = "replace", seed: int = 0, generations: int = 5, *, samples: int = 800, epochs: int = 100,
            thresholds: Thresholds | str | dict[str, Any] | None = "balanced",
            reference: Literal["gen0", "gold"] = "gen0", latent: int = 8, hidden: int = 128, lr: float = 5e-3,
            check_size: int | None = None,
            sampling: Literal["sample", "mean"] = "sample", warm_start: bool = False, pool_epochs: bool = False,
            features: int | None = None, quiet: bool = True,
            callback: Callable[[int, DigitsVAE, np.ndarray], None] | None = None) -> list[GenerationRecord]:
    """Run generation 0 and ``generations`` more of one regime; one record per generation.

    Args:
        regime: ``"replace"``, ``"fresh"`` or ``"accumulate"``.
        seed: selects initialisations, minibatch orders, human subsets and every image sampled (the
            train / val / gold / test split itself is fixed).
        generations: retrainings after generation 0 (``generations + 1`` records).
        samples: training images per generation (at most the train pool's 997).
        epochs: passes over ``samples`` images per generation, counted in optimiser steps (batches of 128),
            so every generation of every regime costs the same.
        thresholds: the guard's thresholds (a preset name, a dict or :class:`Thresholds`).
        reference: ``"gen0"`` (default): from generation 1 on, also judge against a reference profile of
            generation 0's check, so diversity is measured against the VAE as it was trained on human
            data where that sits below gold; ``"gold"``: against the gold set alone. A VAE's samples hold
            ~80% of gold's pixel variance from generation 0 on -- near the balanced warn bound of 75% -- so with
            ``"gold"`` the ``accumulate`` control warns at most generations (see the module notes).
        latent, hidden, lr: the VAE's latent and hidden widths and Adam's learning rate.
        check_size: images the guard checks each generation (default: the gold set's size, 300).
        sampling: how images leave a model, for the next generation's training data and for the guard's
            check alike: ``"sample"`` (default; grey levels ~ Binomial(16, p), the model's own distribution)
            or ``"mean"`` (the decoder's mean image p).
        warm_start: start each generation from the previous generation's weights instead of from scratch.
        pool_epochs: in ``accumulate``, run ``epochs`` passes over the whole growing pool (as Gerstgrasser et
            al. do; generation ``g`` then costs ``g + 1`` times as much) instead of over ``samples`` images.
        features: judge in the top ``features`` principal axes of gold (fit once) instead of raw pixels.
        quiet: keep alert log lines out of the ``collapseguard`` logger (``CollapseWarning`` is always silenced).
        callback: called as ``callback(generation, model, check_images)`` after each generation's check
            (e.g. to keep sample images for a plot).

    ``quality`` is ``exp(-mean ELBO / 64)`` of the test images: a per-pixel perplexity bound, lower is
    better. ``val_loss`` is the mean negative ELBO per image of held-out images drawn like this generation's
    training data: the human val images (generation 0 and ``fresh``), new samples of the previous model
    (``replace``), or the accumulated pool's equal-share mixture (``accumulate``). ``metrics`` holds what the
    guard measured plus ``test_nll`` (nats per image) and, with ``features``, ``pixel_variance``.
    """
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r}: choose one of {REGIMES}")
    if sampling not in ("sample", "mean") or reference not in ("gen0", "gold"):
        raise ValueError(f"sampling={sampling!r}, reference={reference!r}: choose 'sample' or 'mean', 'gen0' or 'gold'")
    data = digits_data()
    if not 2 <= samples <= len(data.train) or generations < 0 or epochs < 1:
        raise ValueError(f"need 2 <= samples <= {len(data.train)} (the train pool), epochs >= 1 and generations >= 0, "
                         f"got samples={samples}, epochs={epochs}, generations={generations}")
    check_size = check_size or len(data.gold)
    steps = epochs * math.ceil(samples / BATCH_SIZE)
    project = _Pca(data.gold, features) if features else (lambda x: np.asarray(x, dtype=np.float64))
    monitor = CollapseMonitor(GoldSet.from_arrays(project(data.gold), name="digits-gold"), thresholds)
    # the guard reads gold_loglik per row and judges it per dimension of what it sees: in a feature space of
    # ``features`` axes, rescale the per-image ELBO so that the judged figure stays per pixel
    scale = (features or PIXELS) / PIXELS
    pool: list[np.ndarray] = [_human(seed, samples, _TRAIN)]
    models: list[DigitsVAE] = []
    records = []
    with _quiet_run(quiet):
        for g in range(generations + 1):
            draw = torch.Generator().manual_seed(_seed(seed, _MODEL, g))
            val_draw = torch.Generator().manual_seed(_seed(seed, _VAL, g))
            if g == 0 or regime == "fresh":
                train, val = (pool[0] if g == 0 else _human(seed, samples, _FRESH, g)), data.val
            elif regime == "replace":
                train = models[-1].sample(samples, draw, sampling)
                val = models[-1].sample(len(data.val), val_draw, sampling)
            else:  # accumulate: the human images and every generation's samples so far, in equal shares
                pool.append(models[-1].sample(samples, draw, sampling))
                train, val = np.concatenate(pool), _pool_val(data.val, models, seed, g, sampling)
            if g == 0:
                model = DigitsVAE(latent, hidden)
                model.load_state_dict(_generation0(seed, samples, steps, latent, hidden, lr))
                model.eval()
            else:
                n_steps = steps * len(pool) if pool_epochs and regime == "accumulate" else steps
                model = train_vae(train, _seed(seed, _INIT, g), n_steps, latent=latent, hidden=hidden, lr=lr,
                                  init=models[-1] if warm_start else None)
            models.append(model)
            check = model.sample(check_size, torch.Generator().manual_seed(_seed(seed, _CHECK, g)), sampling)
            result = monitor.check(project(check), step=g,
                                   gold_loglik=mean_elbo(model, data.gold, _seed(seed, _EVAL)) * scale)
            if g == 0 and reference == "gen0":
                monitor.reference_profile = monitor.profile(result, source=f"{SCENARIO} generation 0, seed {seed}")
            test_elbo = mean_elbo(model, data.test, _seed(seed, _EVAL))
            metrics = {**result.metrics, "test_nll": -float(test_elbo.mean())}
            if features:
                metrics["pixel_variance"] = float(check.astype(np.float64).var(axis=0).sum())
            records.append(GenerationRecord(
                scenario=SCENARIO, regime=regime, seed=seed, generation=g,
                quality=math.exp(-float(test_elbo.mean()) / PIXELS),
                val_loss=-float(mean_elbo(model, val, _seed(seed, _EVAL)).mean()),
                health=result.health, severity=result.severity, alerts=[a.to_dict() for a in result.alerts],
                metrics=metrics))
            if callback is not None:
                callback(g, model, check)
    return records


def _pool_val(real_val: np.ndarray, models: list[DigitsVAE], seed: int, g: int, sampling: str) -> np.ndarray:
    """Held-out images of the accumulated pool: human val images and each model's samples, in equal shares."""
    rng = np.random.default_rng([seed, _VAL, g])
    counts = rng.multinomial(len(real_val), [1.0 / (len(models) + 1)] * (len(models) + 1))
    parts = [real_val[np.sort(rng.choice(len(real_val), counts[0], replace=False))]]
    for i, (model, c) in enumerate(zip(models, counts[1:], strict=True)):
        parts.append(model.sample(int(c), torch.Generator().manual_seed(_seed(seed, _VAL, g, i)), sampling))
    return np.concatenate(parts).astype(np.float32)
