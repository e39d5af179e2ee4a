"""The array models of the healthy-training benchmark: a VAE on real handwritten digits and a Gaussian mixture.

Each is an ordinary Lightning run with :class:`~collapseguard.integrations.lightning.CollapseGuard` at its
defaults (``on_collapse="halt"``, a check at the end of every epoch), judged through ``sample_fn`` and
``score_fn`` against an array gold set:

- ``vae-mean``: the VAE of :mod:`collapseguard.demos.recursive_images` (scikit-learn's bundled digits),
  whose ``sample_fn`` returns the decoder's mean image -- smooth digits with less spread than real scans;
- ``vae-sample``: the same VAE, sampling grey levels (its own distribution);
- ``gmm``: a four-component 1-D Gaussian mixture fitted by gradient descent to samples of Shumailov et al.'s
  mixture (:data:`collapseguard.demos.recursion.TRUE_GMM`, whose rarest component is the farthest out).

``score_fn`` returns each gold row's log-likelihood (the VAE's ELBO per image), which the guard judges per
dimension. The collapsing twins train, from a third of the way in, on the model's own samples drawn at half
temperature (``self``: the VAE's latent, the mixture's component spreads), or from the start on five images
repeated (``degenerate``, VAE). Ground truth: the per-dimension perplexity of held-out real data.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.healthy import RunRecord, _quiet
from collapseguard import ModelHooks

STEPS_PER_EPOCH = 40
BATCH = 128
SELF_TEMPERATURE = 0.5


@dataclass(frozen=True)
class ArrayConfig:
    """One array run: ``model`` is ``vae-mean``, ``vae-sample`` or ``gmm``; ``data`` as for text runs."""

    model: str = "vae-sample"
    epochs: int = 10
    seed: int = 0
    data: str = "human"

    @property
    def name(self) -> str:
        return f"li-{self.model}-s{self.seed}"

    def twin(self) -> ArrayConfig:
        """Five images repeated from the start (VAE, seed 0), else the model's own low-temperature samples from a
        third of the way in."""
        return dataclasses.replace(self, data="degenerate" if self.model.startswith("vae") and self.seed == 0
                                   else "self")


def grid(smoke: bool = False) -> list[ArrayConfig]:
    if smoke:
        return [ArrayConfig("vae-mean", epochs=2), ArrayConfig("gmm", epochs=2)]
    return [ArrayConfig(model, seed=seed) for model in ("vae-mean", "vae-sample", "gmm") for seed in (0, 1, 2)]


class Rows(torch.utils.data.Dataset):
    """A fixed number of training rows; :meth:`refresh` swaps them for the model's own samples in place."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = torch.as_tensor(np.asarray(x), dtype=torch.float32)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]

    @torch.no_grad()
    def refresh(self, model: Any, seed: int) -> None:
        """Replace the rows by the model's own samples, drawn as synthetic data usually is: at a lower temperature
        (:data:`SELF_TEMPERATURE`: the latent's or the components' spread scaled down), typical rather than diverse."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rows = model.draw(len(self), temperature=SELF_TEMPERATURE)
            self.x = torch.as_tensor(np.asarray(rows, dtype=np.float32).reshape(len(self), -1))


class GaussianMixture(torch.nn.Module):
    """A K-component 1-D Gaussian mixture with learnable weights, means and log standard deviations."""

    def __init__(self, k: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.logits = torch.nn.Parameter(torch.zeros(k))
        self.means = torch.nn.Parameter(torch.randn(k, generator=gen) * 3.0)
        self.log_std = torch.nn.Parameter(torch.zeros(k))

    def loglik(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1)
        comp = torch.distributions.Normal(self.means, self.log_std.exp()).log_prob(x)
        return torch.logsumexp(comp + torch.log_softmax(self.logits, 0), dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return -self.loglik(batch).mean()

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0) -> np.ndarray:
        which = torch.multinomial(torch.softmax(self.logits, 0), n, replacement=True)
        noise = self.log_std.exp()[which] * torch.randn(n) * temperature
        return (self.means[which] + noise).reshape(-1, 1).numpy()


class VAE(torch.nn.Module):
    """The digits VAE with a loss, a sampler and a per-image score in one place."""

    def __init__(self, mode: str, seed: int) -> None:
        super().__init__()
        from collapseguard.demos.recursive_images import DigitsVAE

        torch.manual_seed(seed)
        self.vae = DigitsVAE()
        self.mode = mode

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return -self.vae.elbo(batch).mean()

    def loglik(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.elbo(x)  # a lower bound on log p(x), per image

    @torch.no_grad()
    def draw(self, n: int, temperature: float = 1.0) -> np.ndarray:
        """``n`` images decoded from z ~ N(0, temperature^2 I): sampled grey levels or decoder means (``mode``)."""
        p = torch.sigmoid(self.vae.decoder(torch.randn(n, self.vae.latent) * temperature))
        if self.mode == "mean":
            return p.numpy()
        from collapseguard.demos.recursive_images import LEVELS

        return (torch.binomial(torch.full_like(p, float(LEVELS)), p) / LEVELS).numpy()


def _data(cfg: ArrayConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(train, gold, test, dimension) for ``cfg``."""
    if cfg.model == "gmm":
        from collapseguard.demos.recursion import TRUE_GMM

        rng = np.random.default_rng(10_000 + cfg.seed)
        train, gold, test = (TRUE_GMM.sample(n, rng).reshape(-1, 1) for n in (2000, 500, 2000))
        return train, gold, test, 1
    from collapseguard.demos.recursive_images import digits_data

    d = digits_data()
    return np.asarray(d.train), np.asarray(d.gold), np.asarray(d.test), d.train.shape[1]


def run_array(cfg: ArrayConfig) -> RunRecord:
    """Train one array configuration through Lightning with the guard at its defaults; record every check."""
    import os

    import lightning.pytorch as pl

    from collapseguard import GoldSet
    from collapseguard.integrations.lightning import CollapseGuard

    start = time.perf_counter()
    torch.set_num_threads(1)
    train, gold_rows, test, dim = _data(cfg)
    if cfg.data == "degenerate":
        train = np.repeat(train[:5], math.ceil(len(train) / 5), axis=0)[: len(train)]
    data = Rows(train)
    model = GaussianMixture(seed=cfg.seed) if cfg.model == "gmm" else VAE(cfg.model.split("-")[1], cfg.seed)
    self_from = cfg.epochs // 3 if cfg.data == "self" else None
    test_x = torch.as_tensor(test, dtype=torch.float32)
    record = RunRecord(dataclasses.asdict(cfg), cfg.name, kind="array")

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            return self.model.loss(batch)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=5e-3 if cfg.model != "gmm" else 5e-2)

    class Bench(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if self_from is not None and trainer.current_epoch >= self_from:
                data.refresh(model, cfg.seed * 1000 + trainer.current_epoch)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            with torch.no_grad():
                nll = -float(model.loglik(test_x).mean()) / dim
                record.test_ppl.append(math.exp(min(nll, 700.0)))  # a collapsed variance makes it overflow
            if trainer.should_stop and record.halted_at is None:
                record.halted_at = len(record.test_ppl) - 1
                record.halt_reason = guard.engine.last_outcome.reason if guard.engine.last_outcome else None

    guard = CollapseGuard(GoldSet.from_arrays(gold_rows, name=f"{cfg.model}-gold"), on_collapse=os.environ.get("COLLAPSEGUARD_BENCH_ON_COLLAPSE", "halt"), hooks=ModelHooks(sample=lambda module, n: module.model.draw(n), score=lambda module, rows: module.model.loglik(rows)))
    sampler = torch.utils.data.RandomSampler(data, num_samples=STEPS_PER_EPOCH * BATCH,
                                             generator=torch.Generator().manual_seed(cfg.seed))
    with _quiet():
        pl.seed_everything(cfg.seed, verbose=False)
        trainer = pl.Trainer(max_epochs=cfg.epochs, callbacks=[guard, Bench()], logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             accelerator="cpu", devices=1)
        trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=BATCH, sampler=sampler))
    engine = guard.engine
    record.prompts = engine.prompts_per_check
    for h in engine.monitor.history:
        record.checks.append({"step": h["step"], "baseline": bool(h.get("baseline")), "metrics": h["metrics"],
                              "alerts": h["alerts"], "anchor": h.get("anchor"), "health": h["health"],
                              "reference": engine.monitor.reference(int(h["metrics"].get("num_outputs",
                                                                                        record.prompts)))})
    record.seconds = time.perf_counter() - start
    return record
