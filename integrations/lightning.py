"""PyTorch Lightning adapter: :class:`CollapseGuard`, a ``lightning.pytorch.Callback``.

>>> from collapseguard.integrations.lightning import CollapseGuard   # doctest: +SKIP
>>> trainer = lightning.Trainer(callbacks=[CollapseGuard(gold, tokenizer=tok, on_collapse="halt")])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer

from collapseguard.gold.goldset import GoldSet
from collapseguard.guard.engine import Generation, GuardEngine
from collapseguard.guard.sampling import AnchorMixSampler
from collapseguard.integrations._torch import (
    check_tokenizer_fits,
    gather_measurements,
    generate_continuations,
    model_device,
    produce_from_callable,
    produce_from_hf_model,
    special_ids,
)

log = logging.getLogger("collapseguard")


def find_hf_model(module: torch.nn.Module) -> Any | None:
    """The Hugging Face ``PreTrainedModel`` a LightningModule holds as an attribute, if any."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # transformers not installed: only generate_fn / generate() paths
        return None
    if isinstance(module, PreTrainedModel):
        return module
    for child in module.children():
        if isinstance(child, PreTrainedModel):
            return child
    return None


def load_tokenizer(path: str) -> Any:
    """A tokenizer from a local ``save_pretrained`` folder or a ``tokenizer.json`` file (never downloads)."""
    from pathlib import Path

    if Path(path).is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(path)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer={path!r} is neither a tokenizer.json file nor a save_pretrained folder")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class CollapseGuard(Callback):
    """Check a model for collapse at the end of training epochs; log, warn, and optionally halt.

    Args:
        gold: the human gold set (:class:`~collapseguard.GoldSet`), or the path of a JSONL gold file
            (text in ``"text"``), as a LightningCLI config gives it.
        tokenizer: the model's tokenizer, or the path of a saved one; when omitted, the module's
            ``tokenizer`` attribute is used (required for a text gold set).
        generate_fn: ``fn(pl_module, prompts) -> token id sequences`` for models that are neither a
            HF ``PreTrainedModel`` holder nor have a HF-style ``generate`` method.
        sample_fn: ``fn(pl_module, n) -> (n, d) array`` for non-text models against an array gold set.
        score_fn: with ``sample_fn``: ``fn(pl_module, gold_rows) -> log-likelihood per row``, the
            model-side statistic for non-text models (judged as ``gold_nll``).
        **engine_kwargs: ``thresholds``, ``on_collapse`` ("warn" | "halt"), ``on_error``,
            ``every_n_epochs``, ``num_samples``, ``prompt_length``, ``max_new_tokens``, ``patience``,
            ``seed``, ``generation_kwargs``, ``model_stats``, ``batch_size``, ``reference`` (a
            reference profile to judge against), ``save_profile`` (write one at the end of fit): see
            :class:`~collapseguard.guard.engine.GuardEngine`.

    Every metric is logged as ``collapseguard/<name>`` through ``pl_module.log`` (so any Lightning
    logger records it, and ``ModelCheckpoint(monitor="collapseguard/health", mode="max")`` works).
    """

    def __init__(self, gold: GoldSet | str, tokenizer: Any = None, *, generate_fn: Callable[..., Any] | None = None,
                 sample_fn: Callable[..., Any] | None = None, score_fn: Callable[..., Any] | None = None,
                 **engine_kwargs: Any) -> None:
        if isinstance(gold, str):  # from LightningCLI / YAML: the path of a JSONL gold file
            gold = GoldSet.from_jsonl(gold)
        if not isinstance(gold, GoldSet):
            raise TypeError(f"CollapseGuard needs gold=GoldSet.from_texts(...) (or from_jsonl / from_pairs / "
                            f"from_arrays, or a JSONL path), got {type(gold).__name__}")
        if isinstance(tokenizer, str):
            tokenizer = load_tokenizer(tokenizer)
        if generate_fn is not None and sample_fn is not None:
            raise ValueError("pass generate_fn (text models) or sample_fn (array models), not both")
        if score_fn is not None and sample_fn is None:
            raise ValueError("score_fn scores gold samples of an array gold set: pass it with sample_fn")
        for name, fn in (("generate_fn", generate_fn), ("sample_fn", sample_fn), ("score_fn", score_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.engine = GuardEngine(gold, tokenizer=tokenizer, **engine_kwargs)
        if sample_fn is None and gold.kind == "array":
            raise ValueError("an array gold set needs sample_fn=fn(pl_module, n) -> (n, d) samples")
        if sample_fn is not None and gold.kind == "text":
            raise ValueError("sample_fn is for array gold sets; this gold set holds texts: use generate_fn")
        self.generate_fn = generate_fn
        self.sample_fn = sample_fn
        self.score_fn = score_fn

    @property
    def state_key(self) -> str:
        e = self.engine
        return self._generate_state_key(gold=e.gold.fingerprint[:16], every_n_epochs=e.every_n_epochs,
                                        num_samples=e.num_samples, max_new_tokens=e.max_new_tokens)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            # a module that carries its tokenizer needs none passed (the LightningCLI case)
            tokenizer = self.engine.tokenizer if self.engine.tokenizer is not None else getattr(pl_module, "tokenizer", None)
            self.engine.setup(tokenizer, rank=trainer.global_rank, world_size=trainer.world_size)
            hf = find_hf_model(pl_module)
            if hf is not None and self.generate_fn is None and self.engine.tokenizer is not None:
                check_tokenizer_fits(hf, self.engine.tokenizer)

    def _produce(self, trainer: Trainer, pl_module: LightningModule) -> Callable[[], Any]:
        rank, world = trainer.global_rank, trainer.world_size
        if self.sample_fn is not None:
            return produce_from_callable(self.engine, pl_module, self.sample_fn, "sample", rank, world, self.score_fn)
        if self.generate_fn is not None:
            return produce_from_callable(self.engine, pl_module, self.generate_fn, "generate", rank, world)
        hf = find_hf_model(pl_module)
        if hf is not None:
            # the strategy's wrapped model may own the sharding (an FSDP root, a DeepSpeedEngine)
            return produce_from_hf_model(self.engine, hf, self.engine.tokenizer, rank, world,
                                         holders=(trainer.strategy.model,))
        if callable(getattr(pl_module, "generate", None)):
            return produce_from_callable(
                self.engine, pl_module,
                lambda m, prompts: _generate_via_method(m, prompts, self.engine), "generate", rank, world)
        raise TypeError(f"{type(pl_module).__name__} holds no Hugging Face PreTrainedModel and has no generate(); "
                        "pass generate_fn=fn(pl_module, prompts) -> token id sequences")

    def _check(self, trainer: Trainer, pl_module: LightningModule) -> Any:
        return self.engine.run_check(self._produce(trainer, pl_module), gather_measurements,
                                     step=trainer.global_step, epoch=trainer.current_epoch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.engine.run_baseline(self._produce(trainer, pl_module), gather_measurements, step=trainer.global_step)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        monitor = self.engine.data_monitor
        if monitor is not None and isinstance(batch, dict) and "input_ids" in batch:
            monitor.observe(batch["input_ids"], batch.get("is_human"))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.engine.save_profile is None:
            return
        if self.engine.last_step != trainer.global_step:  # profile the final model, not an earlier one
            self._check(trainer, pl_module)
        if trainer.is_global_zero:
            self.engine.write_profile(source=f"lightning:{type(pl_module).__name__}@step{trainer.global_step}")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.engine.should_check(trainer.current_epoch):
            return
        outcome = self._check(trainer, pl_module)
        for name, value in outcome.log_metrics.items():
            # identical on every rank (merged states): syncing is exact and silences Lightning's DDP warning
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)
        should_stop = trainer.strategy.reduce_boolean_decision(outcome.should_stop, all=False)
        if should_stop:
            trainer.should_stop = True
            if trainer.current_epoch + 1 < (trainer.fit_loop.min_epochs or 0):
                log.error("%s (Lightning keeps training until min_epochs=%d)", outcome.reason, trainer.fit_loop.min_epochs)
            else:
                log.error("%s", outcome.reason)

    def state_dict(self) -> dict[str, Any]:
        return self.engine.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.engine.load_state_dict(state_dict)


def _generate_via_method(module: Any, prompts: list, engine: GuardEngine) -> Generation:
    """Drive a LightningModule's own HF-style ``generate(input_ids=..., max_new_tokens=..., ...)``."""
    eos, pad = special_ids(engine.tokenizer, module)
    seqs, finished = generate_continuations(
        module.generate, prompts, device=model_device(module), max_new_tokens=engine.max_new_tokens,
        eos_token_id=eos, pad_token_id=pad, batch_size=engine.batch_size, generation_kwargs=engine.generation_kwargs)
    return Generation(sequences=seqs, finished=finished)


class AnchorMixDataModule(LightningDataModule):
    """Training batches with a guaranteed human floor, for ``trainer.fit(model, datamodule=...)``.

    Builds an :class:`~collapseguard.AnchorMixSampler` over ``dataset`` (one provenance label per
    index) and shards it across the trainer's processes itself, so run the trainer with
    ``use_distributed_sampler=False``. Give ``datamodule.sampler`` to
    ``CollapseGuard(..., on_collapse="reweight", sampler=datamodule.sampler)`` to steer the floor.
    """

    def __init__(self, dataset: Any, labels: Any, batch_size: int, min_human_fraction: float = 0.2, seed: int = 0,
                 **sampler_kwargs: Any) -> None:
        super().__init__()
        if len(labels) != len(dataset):
            raise ValueError(f"labels has {len(labels)} entries for a dataset of {len(dataset)}: one label per index")
        self.dataset = dataset
        self.sampler = AnchorMixSampler(labels, batch_size, min_human_fraction, seed, **sampler_kwargs)

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.sampler.num_replicas, self.sampler.rank = self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=self.sampler)
