"""Recursive training of a tiny GPT-2 on real human text: the experiment behind profiles' evidence.

Generation 0 trains on human paragraphs and saves a reference profile. Each
later generation is a new run, trained from scratch either on samples of the
previous generation's model (``"replace"``, Shumailov et al.'s regime) or on
fresh human data (``"fresh"``, the control), and judged by a guard that loads
the generation-0 profile and checks once, at the end of the run.

:func:`run_anchored` and :func:`run_text` retrain iteratively instead: each generation continues the
previous model (warm start). :func:`run_text` is the text scenario (``"text-gpt2"``) of the detection
and mitigation benchmarks (``benchmarks/detection.py``, ``benchmarks/mitigation.py``): it returns one
:class:`~collapseguard.demos.experiment.GenerationRecord` per generation, with a ground-truth quality measured
on human test text that neither the models nor the guard see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from collapseguard import CheckSchedule, GenerationSettings, ReweightPolicy
from collapseguard.demos.experiment import GenerationRecord
from collapseguard.demos.tiny import TokenBlocks, lightning_module, tiny_gpt2
from collapseguard.detection.alerts import SEVERITY_RANK, CollapseWarning
from collapseguard.gold.goldset import GoldSet


@dataclass
class GenerationResult:
    regime: str
    generation: int
    metrics: dict[str, float]
    reference: dict[str, float]  # the generation-0 profile's metrics
    alerts: list[dict[str, Any]]


def sample_texts(model: Any, tokenizer: Any, starts: Sequence[Sequence[int]], n: int, length: int = 64,
                 seed: int = 0, batch_size: int = 100) -> list[str]:
    """``n`` texts sampled (temperature 1, no truncation) from short human prompts, ``batch_size`` at a time."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(starts), (n,), generator=gen).tolist()
    out: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for b in range(0, n, batch_size):
            batch = torch.tensor([list(starts[i]) for i in idx[b:b + batch_size]])
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
    kwargs = {**guard_kwargs, "schedule": CheckSchedule(every_n_epochs=epochs)}

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
            base, guard0 = fit(train, seed * 1000, save_profile_to=profile)
            gen0 = guard0.engine.monitor.checks[-1]
            results.append(GenerationResult("gen0", 0, gen0["metrics"], dict(gen0["metrics"]), gen0["alerts"]))
            for regime in regimes:
                model = base
                for g in range(1, generations + 1):
                    data = sample_texts(model, tokenizer, starts, samples, seed=seed * 1000 + g) \
                        if regime == "replace" else list(train)
                    model, guard = fit(data, seed * 1000 + g, reference_profile=profile)
                    ref = guard.engine.reference_profile
                    last = guard.engine.monitor.checks[-1]
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
    that floor, steered by a guard with ``on_collapse=ReweightPolicy(sampler)``. Both load the generation-0 profile.
    """
    import copy

    import lightning.pytorch as pl

    from collapseguard.guard.sampling import AnchorMixSampler
    from collapseguard.integrations.lightning import CollapseGuard

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
            guard = CollapseGuard(gold, tokenizer=tokenizer, on_collapse=ReweightPolicy(sampler), **guard_kwargs,
                                  **extra)
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
        guard0 = fit(base, train, (), seed * 1000, 4 * epochs, save_profile_to=profile, schedule=CheckSchedule(every_n_epochs=4 * epochs))
        gen0 = guard0.engine.monitor.checks[-1]
        results.append(GenerationResult("gen0", 0, gen0["metrics"], dict(gen0["metrics"]), gen0["alerts"]))
        for regime in ("replace", "reweight"):
            model = copy.deepcopy(base)
            for g in range(1, generations + 1):
                data = sample_texts(model, tokenizer, starts, samples, seed=seed * 1000 + g)
                anchors: list[str] = []
                if regime == "reweight":
                    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1000 + g))
                    anchors = [train[i] for i in pick[: samples // 8].tolist()]
                guard = fit(model, data, anchors, seed * 1000 + g, epochs, reference_profile=profile)
                last = guard.engine.monitor.checks[-1]
                results.append(GenerationResult(regime, g, last["metrics"], dict(guard.engine.reference_profile.metrics),
                                                last["alerts"]))
    return results


# --------------------------------------------------------------------------------------------------------------
# The text scenario of the detection / mitigation benchmark: one GenerationRecord per generation.

TEXT_SCENARIO = "text-gpt2"
SAMPLE_TOKENS = 4 + 64  # a sample: a 4-token human prompt and 64 sampled tokens (see sample_texts)


@dataclass(frozen=True)
class TextData:
    """The human text of the text scenario, split once and deterministically.

    ``train_gold_split()`` holds every third CPython documentation paragraph out as gold (the guard's
    own reference). The remaining paragraphs are split again by position: every ``split``-th (from 0)
    is the **test** set -- the ground truth, perplexity of human text no model and no guard ever sees --
    every ``split``-th from ``split // 2`` is the human **validation** set (``val_loss`` on human data),
    and the rest is the human **pool** that generation 0 trains on and later generations draw from.
    """

    tokenizer: Any
    gold: GoldSet
    pool: list[str]
    val: list[str]
    test: list[str]


@functools.lru_cache(maxsize=2)
def text_data(split: int = 8) -> TextData:
    """The tokenizer (byte-level BPE, as in the tests and examples), gold set and pool / val / test split."""
    from collapseguard.demos.data import train_gold_split
    from collapseguard.demos.tiny import train_tokenizer

    train, gold_texts = train_gold_split()
    test = train[::split]
    val = train[split // 2::split]
    pool = [p for i, p in enumerate(train) if i % split not in (0, split // 2)]
    # the vocabulary is fitted on all paragraphs, like the tests' and examples' tokenizer: it is the model's
    # alphabet, not something it learns from, so the test set stays unseen by every model
    tokenizer = train_tokenizer(train + gold_texts)
    return TextData(tokenizer, GoldSet.from_texts(gold_texts, name="pydoc-gold"), pool, val, test)


def mean_token_loss(model: Any, blocks: torch.utils.data.Dataset, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over ``blocks`` (TokenBlocks-like), in eval mode."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(blocks, batch_size=batch_size):
            n = batch["input_ids"].shape[0]
            total += float(model(**batch).loss) * n  # every block has the same length: weight by blocks
            count += n
    model.train(was_training)
    return total / count


def _draw_paragraphs(texts: Sequence[str], tokens: int, tokenizer: Any, seed: int) -> list[str]:
    """A random draw (without replacement) of ``texts`` holding about ``tokens`` tokens."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    out: list[str] = []
    have = 0
    for i in order:
        if have >= tokens:
            break
        out.append(texts[i])
        have += len(tokenizer.encode(texts[i], add_special_tokens=False)) + 1
    return out


def parse_regime(regime: str, floor: float | None = None) -> tuple[str, float | None]:
    """``("replace" | "fresh" | "accumulate" | "reweight", floor)`` from ``"reweight-0.2"`` and the like."""
    from collapseguard.demos.experiment import REGIMES

    if regime in REGIMES:
        return regime, None
    if regime == "reweight" or regime.startswith("reweight-"):
        value = floor if regime == "reweight" else float(regime.split("-", 1)[1])
        if value is None or not 0.0 < value < 1.0:
            raise ValueError(f"regime {regime!r} needs a human floor in (0, 1) (e.g. 'reweight-0.2' or floor=0.2); "
                             "a floor of 0 is the 'replace' regime")
        return "reweight", float(value)
    raise ValueError(f"regime {regime!r} is not one of {list(REGIMES)} or 'reweight-<floor>'")


_GEN0_CACHE: dict[tuple[Any, ...], tuple[dict[str, Any], Any, Any]] = {}


@contextlib.contextmanager
def quiet_training() -> Iterator[None]:
    """Silence CollapseWarning, Lightning's chatter and the guard's per-check log lines."""
    names = ("lightning.pytorch", "lightning.fabric", "collapseguard", "transformers")
    with contextlib.suppress(ImportError):  # transformers sets its level when first configured: do that first
        from transformers.utils import logging as hf_logging

        hf_logging.get_verbosity()
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        warnings.filterwarnings("ignore", module=r"lightning\..*")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def run_text(regime: str, seed: int, generations: int = 5, *, samples: int = 250, epochs: int = 2,
             gen0_epochs: int = 6, floor: float | None = None, thresholds: Any = "balanced",
             num_samples: int = 64, max_new_tokens: int = 32, val_samples: int | None = None,
             lr: float = 3e-3) -> list[GenerationRecord]:
    """Iterative retraining of a tiny GPT-2 on CPython documentation text; one record per generation.

    Generation 0 trains from scratch on the human pool for ``gen0_epochs`` epochs and saves the guard's
    reference profile (shared, in this process, by every regime of the same seed and sizes). Each later
    generation continues the previous generation's model (warm start) for ``epochs`` epochs on:

    - ``replace``: ``samples`` samples of the previous model (Shumailov et al.);
    - ``fresh`` (control): a fresh random draw of human pool paragraphs holding as many tokens;
    - ``accumulate`` (control, Gerstgrasser et al. 2024): the human pool plus every generation's samples so
      far. To keep the cost per generation constant each epoch draws, without replacement, as many blocks as
      ``replace`` trains on from that growing pool (``RandomSampler(num_samples=...)``), so the human share
      of the training signal falls as ``pool / (pool + g * samples)`` exactly as in full accumulation;
    - ``reweight-<floor>`` (mitigation): ``(1 - floor) * samples`` own samples plus a fresh draw of human
      paragraphs holding ``floor`` of the tokens, behind an ``AnchorMixSampler`` with
      ``min_human_fraction=floor`` that a guard with ``on_collapse="reweight"`` steers (it checks every
      epoch, so it acts from a generation's second epoch on; each generation starts again at the floor).

    Each generation's guard loads the generation-0 profile and judges the model once at the end of the
    generation (the reweight guard also after earlier epochs; the record keeps the last check).

    Ground truth ``quality``: perplexity of the human **test** paragraphs (:func:`text_data`), which no
    model trains on and which are not the guard's gold set. ``val_loss``: mean token loss on held-out data
    drawn like the generation's training data -- ``val_samples`` extra own samples (replace), the human
    validation paragraphs (generation 0, fresh), both weighted by their share of the accumulated pool
    (accumulate) or by the floor (reweight). ``val_samples`` defaults to ``max(20, samples // 6)``.

    Cost at the defaults, one CPU thread: about 2.5 s per generation (sampling 291 texts is half of it;
    ``fresh`` ~1 s) and 7 s for generation 0. CollapseWarning, the guard's log lines and Lightning's and
    transformers' chatter are silenced inside.
    """
    import copy

    import lightning.pytorch as pl

    from collapseguard.demos.tiny import TokenBlocks, lightning_module, tiny_gpt2
    from collapseguard.guard.sampling import AnchorMixSampler
    from collapseguard.integrations.lightning import CollapseGuard

    kind, human_floor = parse_regime(regime, floor)
    name = f"reweight-{human_floor:g}" if kind == "reweight" else kind
    data = text_data()
    tok, gold = data.tokenizer, data.gold
    val_samples = max(20, samples // 6) if val_samples is None else val_samples
    starts = [tok.encode(t, add_special_tokens=False)[:4] for t in data.pool]
    test_blocks, human_val = TokenBlocks(data.test, tok), TokenBlocks(data.val, tok)
    guard_kwargs = {"thresholds": thresholds,
                    "generation": GenerationSettings(num_samples=num_samples, max_new_tokens=max_new_tokens)}

    def fit(model: Any, loader: Any, n_epochs: int, guard: CollapseGuard, run_seed: int) -> None:
        pl.seed_everything(run_seed, verbose=False)
        trainer = pl.Trainer(max_epochs=n_epochs, callbacks=[guard], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        trainer.fit(lightning_module(model, lr=lr), loader)

    def record(generation: int, model: Any, guard: CollapseGuard, val_loss: float) -> GenerationRecord:
        last = guard.engine.monitor.checks[-1]
        metrics = {k: float(v) for k, v in last["metrics"].items()}
        if guard.engine.human_fraction is not None:
            metrics["human_fraction_target"] = float(guard.engine.human_fraction)
        severity = max((a["severity"] for a in last["alerts"]), key=SEVERITY_RANK.__getitem__, default=None)
        return GenerationRecord(TEXT_SCENARIO, name, seed, generation, math.exp(mean_token_loss(model, test_blocks)),
                                val_loss, float(last["health"]), severity, [dict(a) for a in last["alerts"]],
                                metrics)

    def loader_of(dataset: Any) -> Any:
        return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)

    records: list[GenerationRecord] = []
    with quiet_training():
        key = (seed, gen0_epochs, lr, repr(thresholds), num_samples, max_new_tokens)
        if key not in _GEN0_CACHE:
            import tempfile

            from collapseguard.gold.profiles import ReferenceProfile

            base = tiny_gpt2(tok, seed=seed)
            with tempfile.TemporaryDirectory() as tmp:
                guard0 = CollapseGuard(gold, tokenizer=tok, save_profile_to=Path(tmp) / "gen0.json", **guard_kwargs,
                                       schedule=CheckSchedule(every_n_epochs=gen0_epochs))
                fit(base, loader_of(TokenBlocks(data.pool, tok)), gen0_epochs, guard0, seed * 1000)
                profile = ReferenceProfile.load(Path(tmp) / "gen0.json")
            gen0 = record(0, base, guard0, mean_token_loss(base, human_val))
            _GEN0_CACHE[key] = (copy.deepcopy(base.state_dict()), profile, gen0)
        state, profile, gen0 = _GEN0_CACHE[key]
        model = tiny_gpt2(tok, seed=seed)
        model.load_state_dict(state)
        records.append(dataclasses.replace(gen0, regime=name, alerts=[dict(a) for a in gen0.alerts],
                                           metrics=dict(gen0.metrics)))
        budget = samples * SAMPLE_TOKENS  # tokens each generation trains on, in every regime
        pool_blocks = TokenBlocks(data.pool, tok)
        synthetic: list[Any] = []  # accumulate: every generation's training samples, as TokenBlocks
        synthetic_val: list[str] = []  # accumulate: every generation's held-out samples
        for g in range(1, generations + 1):
            run_seed = seed * 1000 + g
            guard = CollapseGuard(gold, tokenizer=tok, reference_profile=profile, **guard_kwargs,
                                  schedule=CheckSchedule(every_n_epochs=epochs))
            if kind == "fresh":
                fit(model, loader_of(TokenBlocks(_draw_paragraphs(data.pool, budget, tok, run_seed), tok)), epochs,
                    guard, run_seed)
                val_loss = mean_token_loss(model, human_val)
            elif kind in ("replace", "accumulate"):
                texts = sample_texts(model, tok, starts, samples + val_samples, seed=run_seed, batch_size=200)
                own, held = texts[:samples], texts[samples:]
                if kind == "replace":
                    fit(model, loader_of(TokenBlocks(own, tok)), epochs, guard, run_seed)
                    val_loss = mean_token_loss(model, TokenBlocks(held, tok))
                else:
                    synthetic.append(TokenBlocks(own, tok))
                    synthetic_val += held
                    dataset = torch.utils.data.ConcatDataset([pool_blocks, *synthetic])
                    per_epoch = min(len(dataset), len(synthetic[-1]))  # as many blocks as replace trains on
                    sampler = torch.utils.data.RandomSampler(dataset, num_samples=per_epoch)
                    fit(model, torch.utils.data.DataLoader(dataset, batch_size=16, sampler=sampler), epochs, guard,
                        run_seed)
                    share = len(pool_blocks) / len(dataset)  # the human share of the accumulated pool
                    val_loss = share * mean_token_loss(model, human_val) + \
                        (1 - share) * mean_token_loss(model, TokenBlocks(synthetic_val, tok))
            else:
                assert human_floor is not None
                n_own = max(1, round(samples * (1 - human_floor)))
                texts = sample_texts(model, tok, starts, n_own + val_samples, seed=run_seed, batch_size=200)
                own, held = TokenBlocks(texts[:n_own], tok), texts[n_own:]
                anchors = TokenBlocks(_draw_paragraphs(data.pool, round(budget * human_floor), tok, run_seed), tok)
                sampler = AnchorMixSampler(["synthetic"] * len(own) + ["human"] * len(anchors), 16, human_floor,
                                           seed=run_seed, allow_repeat_anchors=True)
                guard = CollapseGuard(gold, tokenizer=tok, reference_profile=profile,
                                      on_collapse=ReweightPolicy(sampler), **guard_kwargs)
                loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([own, anchors]),
                                                     batch_sampler=sampler)
                fit(model, loader, epochs, guard, run_seed)
                val_loss = human_floor * mean_token_loss(model, human_val) + \
                    (1 - human_floor) * mean_token_loss(model, TokenBlocks(held, tok))
            records.append(record(g, model, guard, val_loss))
    return records
