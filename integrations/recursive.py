"""Recursive training of a tiny GPT-2 on real human text: the experiment behind profiles' evidence.

Generation 0 trains on human paragraphs and saves a reference profile. Each
later generation is a new run, trained from scratch either on samples of the
previous generation's model (``"replace"``, Shumailov et al.'s regime) or on
fresh human data (``"fresh"``, the control), and judged by a guard that loads
the generation-0 profile and checks once, at the end of the run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from collapseguard.alerts import CollapseWarning
from collapseguard.goldset import GoldSet
from collapseguard.integrations.tiny import TokenBlocks, lightning_module, tiny_gpt2


@dataclass
class GenerationResult:
    regime: str
    generation: int
    metrics: dict[str, float]
    reference: dict[str, float]  # the generation-0 profile's metrics
    alerts: list[dict[str, Any]]


def sample_texts(model: Any, tokenizer: Any, starts: Sequence[Sequence[int]], n: int, length: int = 64,
                 seed: int = 0) -> list[str]:
    """``n`` texts sampled (temperature 1, no truncation) from short human prompts."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(starts), (n,), generator=gen).tolist()
    out: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for b in range(0, n, 100):
            batch = torch.tensor([list(starts[i]) for i in idx[b:b + 100]])
            rows = model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=length,
                                  do_sample=True, top_k=0, pad_token_id=tokenizer.eos_token_id)
            out += [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    model.train(was_training)
    return out


def run_recursive(train: Sequence[str], gold: GoldSet, tokenizer: Any, workdir: str | Path, *,
                  generations: int = 2, epochs: int = 8, samples: int = 500, seed: int = 0,
                  regimes: Sequence[str] = ("replace", "fresh"), **guard_kwargs: Any) -> list[GenerationResult]:
    """Run generation 0 and ``generations`` more per regime; return what each run's guard saw."""
    import lightning.pytorch as pl

    from collapseguard.integrations.lightning import CollapseGuard

    workdir = Path(workdir)
    profile = workdir / f"gen0-seed{seed}.json"
    kwargs = {**guard_kwargs, "every_n_epochs": epochs}

    def fit(texts: Sequence[str], run_seed: int, **extra: Any) -> tuple[Any, CollapseGuard]:
        pl.seed_everything(run_seed, verbose=False)
        model = tiny_gpt2(tokenizer, seed=run_seed)
        guard = CollapseGuard(gold, tokenizer=tokenizer, **kwargs, **extra)
        loader = torch.utils.data.DataLoader(TokenBlocks(texts, tokenizer), batch_size=16, shuffle=True)
        trainer = pl.Trainer(max_epochs=epochs, callbacks=[guard], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(lightning_module(model), loader)
        return model, guard

    starts = [tokenizer.encode(t, add_special_tokens=False)[:4] for t in train]
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
        levels = [lg.level for lg in quiet]
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        try:
            base, guard0 = fit(train, seed * 1000, save_profile=profile)
            gen0 = guard0.engine.monitor.history[-1]
            results.append(GenerationResult("gen0", 0, gen0["metrics"], dict(gen0["metrics"]), gen0["alerts"]))
            for regime in regimes:
                model = base
                for g in range(1, generations + 1):
                    data = sample_texts(model, tokenizer, starts, samples, seed=seed * 1000 + g) \
                        if regime == "replace" else list(train)
                    model, guard = fit(data, seed * 1000 + g, reference=profile)
                    ref = guard.engine.reference
                    last = guard.engine.monitor.history[-1]
                    results.append(GenerationResult(regime, g, last["metrics"], dict(ref.metrics), last["alerts"]))
        finally:
            for lg, level in zip(quiet, levels, strict=True):
                lg.setLevel(level)
    return results


def run_anchored(train: Sequence[str], gold: GoldSet, tokenizer: Any, workdir: str | Path, *, generations: int = 5,
                 epochs: int = 2, samples: int = 500, seed: int = 0, floor: float = 0.2,
                 **guard_kwargs: Any) -> list[GenerationResult]:
    """Iterative retraining, warm-started: each generation continues the previous model on its own samples.

    ``"replace"`` trains on the samples alone; ``"reweight"`` adds a fresh draw of human paragraphs (an
    eighth of the sample count, about ``floor`` of the blocks) behind an :class:`AnchorMixSampler` with
    that floor, steered by a guard with ``on_collapse="reweight"``. Both load the generation-0 profile.
    """
    import copy

    import lightning.pytorch as pl

    from collapseguard.integrations.lightning import CollapseGuard
    from collapseguard.sampling import AnchorMixSampler

    workdir = Path(workdir)
    profile = workdir / f"anchored-gen0-seed{seed}.json"
    starts = [tokenizer.encode(t, add_special_tokens=False)[:4] for t in train]

    def fit(model: Any, texts: Sequence[str], anchors: Sequence[str], run_seed: int, n_epochs: int,
            **extra: Any) -> CollapseGuard:
        pl.seed_everything(run_seed, verbose=False)
        if anchors:
            synthetic, human = TokenBlocks(texts, tokenizer), TokenBlocks(anchors, tokenizer)
            sampler = AnchorMixSampler(["synthetic"] * len(synthetic) + ["human"] * len(human), 16, floor,
                                       seed=run_seed, allow_repeat_anchors=True)
            guard = CollapseGuard(gold, tokenizer=tokenizer, on_collapse="reweight", sampler=sampler,
                                  **guard_kwargs, **extra)
            loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([synthetic, human]),
                                                 batch_sampler=sampler)
        else:
            guard = CollapseGuard(gold, tokenizer=tokenizer, **guard_kwargs, **extra)
            loader = torch.utils.data.DataLoader(TokenBlocks(texts, tokenizer), batch_size=16, shuffle=True)
        trainer = pl.Trainer(max_epochs=n_epochs, callbacks=[guard], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(lightning_module(model), loader)
        return guard

    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        base = tiny_gpt2(tokenizer, seed=seed)
        guard0 = fit(base, train, (), seed * 1000, 4 * epochs, save_profile=profile, every_n_epochs=4 * epochs)
        gen0 = guard0.engine.monitor.history[-1]
        results.append(GenerationResult("gen0", 0, gen0["metrics"], dict(gen0["metrics"]), gen0["alerts"]))
        for regime in ("replace", "reweight"):
            model = copy.deepcopy(base)
            for g in range(1, generations + 1):
                data = sample_texts(model, tokenizer, starts, samples, seed=seed * 1000 + g)
                anchors: list[str] = []
                if regime == "reweight":
                    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + g))
                    anchors = [train[i] for i in pick[: samples // 8].tolist()]
                guard = fit(model, data, anchors, seed * 1000 + g, epochs, reference=profile)
                last = guard.engine.monitor.history[-1]
                results.append(GenerationResult(regime, g, last["metrics"], dict(guard.engine.reference.metrics),
                                                last["alerts"]))
    return results
