"""PyTorch Lightning adapter: :class:`CollapseGuard`, a ``lightning.pytorch.Callback``.

>>> from collapseguard.integrations.lightning import CollapseGuard   # doctest: +SKIP
>>> trainer = lightning.Trainer(callbacks=[CollapseGuard(gold, tokenizer=tok, on_collapse="halt")])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from collapseguard.detection.datastream import DataStreamMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.provenance import ProvenanceLedger
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.guard.generation import GenerationSettings, ModelHooks
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.options import accepts_old_spellings
from collapseguard.guard.reweighting import ReweightPolicy
from collapseguard.guard.sampling import AnchorMixSampler
from collapseguard.guard.schedule import CheckSchedule
from collapseguard.integrations._torch import (
    agree_with_rank0,
    build_engine,
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
    except ImportError:  # transformers not installed: only hooks / generate() paths
        return None
    if isinstance(module, PreTrainedModel):
        return module
    for child in module.children():
        if isinstance(child, PreTrainedModel):
            return child
    return None


class CollapseGuard(Callback):
    """Check a model for collapse at epoch ends or on optimizer steps (``schedule=``); log, warn, halt or reweight.

    Every argument after ``tokenizer`` is keyword-only. The Hugging Face callback takes the same ones
    (:data:`collapseguard.guard.options.OPTIONS` holds them once, and a test checks both against it).

    Args:
        gold: the human gold set (:class:`~collapseguard.GoldSet`), or the path of a JSONL gold file (text in
            ``"text"``), as a LightningCLI config gives it.
        tokenizer: the model's tokenizer, or the path of a saved one (``save_pretrained`` folder or
            ``tokenizer.json``); when omitted, the module's ``tokenizer`` attribute (required for text gold).
        hooks: :class:`~collapseguard.ModelHooks` for a module that neither holds a Hugging Face ``PreTrainedModel``
            nor has an HF-style ``generate``: ``generate(model, prompts)``, or ``sample(model, n)`` (and
            ``score(model, rows)``) against an array gold set; ``model``: the LightningModule.
        generation: :class:`~collapseguard.GenerationSettings` (or a dict of its fields): prompts per check, their
            length, tokens generated, samples per prompt, batch size, seed, sampling settings.
        thresholds: a :class:`~collapseguard.Thresholds`, a preset name (``"balanced"``, ``"strict"``,
            ``"lenient"``), a dict of fields or a YAML/JSON file.
        on_collapse: ``"warn"`` (log), ``"halt"`` or :class:`~collapseguard.HaltPolicy` (stop training after
            ``patience`` consecutive critical checks, on every rank), or :class:`~collapseguard.ReweightPolicy` (raise
            the human share of its :class:`~collapseguard.AnchorMixSampler` as alerts grow, relax it as health
            recovers).
        on_error: ``"warn"`` (a failing check becomes a fault alert; training goes on) or ``"raise"``.
        schedule: a :class:`~collapseguard.CheckSchedule` (or ``"steps"``, ``"epoch"``, ``"steps=200,sentinel=20"``):
            full checks on epoch ends (default: every one) or every n optimizer steps, a cheap sentinel (gold scored
            teacher-forced, no generation) in between, a full check at once when the sentinel warns, all within a cap
            on the guard's share of training time (``max_overhead``, default 5%).
        score_gold: also score the gold continuations teacher-forced (banded gold perplexity, entropy): the
            model-side evidence that tells a learning model from a collapsing one.
        reference_profile: a :class:`~collapseguard.ReferenceProfile` (or its JSON path): judge every check against
            this trusted model as well.
        save_profile_to: write a reference profile of the final model to this path at the end of training.
        alert_log: append a JSONL trail (one line per check and per alert) to this path; written by rank 0.
        provenance: a :class:`~collapseguard.gold.provenance.ProvenanceLedger` logged when training starts.
        data_monitor: a :class:`~collapseguard.DataStreamMonitor` fed with the training batches and judged at
            every check (its alerts never halt training; it uses these thresholds unless given its own).

    Every metric is logged as ``collapseguard/<name>`` through ``pl_module.log`` (so any Lightning
    logger records it, and ``ModelCheckpoint(monitor="collapseguard/health", mode="max")`` works).
    Like ``EarlyStopping``, it does nothing under ``fast_dev_run``, during the sanity check or outside fitting.
    """

    @accepts_old_spellings
    def __init__(self, gold: GoldSet | str | Path, tokenizer: Any = None, *, hooks: ModelHooks | None = None,
                 generation: GenerationSettings | dict[str, Any] | None = None,
                 thresholds: Thresholds | str | dict[str, Any] | None = None,
                 on_collapse: Literal["warn", "halt"] | HaltPolicy | ReweightPolicy = "warn",
                 on_error: Literal["warn", "raise"] = "warn",
                 schedule: CheckSchedule | str | dict[str, Any] | None = None, score_gold: bool = True,
                 reference_profile: ReferenceProfile | str | Path | None = None,
                 save_profile_to: str | Path | None = None, alert_log: str | Path | None = None,
                 provenance: ProvenanceLedger | None = None, data_monitor: DataStreamMonitor | None = None) -> None:
        self.engine, self.hooks = build_engine(type(self).__name__, locals())

    @staticmethod
    def _should_skip_check(trainer: Trainer) -> bool:
        # as EarlyStopping and ModelCheckpoint: no checks in a smoke run, a sanity check or outside fitting
        return bool(trainer.fast_dev_run) or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING

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
            if hf is not None and self.hooks.generate is None and self.engine.tokenizer is not None:
                check_tokenizer_fits(hf, self.engine.tokenizer)

    def _produce(self, trainer: Trainer, pl_module: LightningModule, tier: str = "full") -> Callable[[], Any]:
        rank, world = trainer.global_rank, trainer.world_size
        if self.hooks.sample is not None:
            return produce_from_callable(self.engine, pl_module, self.hooks.sample, "sample", rank, world,
                                         self.hooks.score)
        if self.hooks.generate is not None:
            return produce_from_callable(self.engine, pl_module, self.hooks.generate, "generate", rank, world)
        hf = find_hf_model(pl_module)
        if hf is not None:
            # the strategy's wrapped model may own the sharding (an FSDP root, a DeepSpeedEngine)
            return produce_from_hf_model(self.engine, hf, self.engine.tokenizer, rank, world,
                                         holders=(trainer.strategy.model,), tier=tier)
        if callable(getattr(pl_module, "generate", None)):
            return produce_from_callable(
                self.engine, pl_module,
                lambda m, prompts: _generate_via_method(m, prompts, self.engine), "generate", rank, world)
        raise TypeError(f"{type(pl_module).__name__} holds no Hugging Face PreTrainedModel and has no generate(); "
                        "pass hooks=ModelHooks(generate=fn) with fn(pl_module, prompts) -> token id sequences")

    def _check(self, trainer: Trainer, pl_module: LightningModule, after_training: bool = False) -> Any:
        return self.engine.run_check(self._produce(trainer, pl_module), gather_measurements,
                                     step=trainer.global_step, epoch=trainer.current_epoch,
                                     after_training=after_training)

    def on_init_end(self, *args: Any, **kwargs: Any) -> None:
        # transformers' Trainer calls this on every callback it is given; Lightning never does. Without it the
        # mistake surfaces as "'CollapseGuard' object has no attribute 'on_init_end'"
        raise TypeError("CollapseGuard is the Lightning callback; a transformers.Trainer (or a TRL trainer) takes "
                        "collapseguard.integrations.transformers.CollapseGuardCallback (or "
                        "collapseguard.integrations.trl.GRPOCollapseGuard for GRPOTrainer), with the same arguments")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_check(trainer):
            return
        if self.engine.sentinel is not None and (self.hooks.generate is not None or self.hooks.sample is not None
                                                 or find_hf_model(pl_module) is None):
            self.engine.disable_sentinel("the sentinel scores gold through a Hugging Face model's forward, and this "
                                         "module generates through hooks or its own generate()")
        self.engine.run_baseline(self._produce(trainer, pl_module), gather_measurements, step=trainer.global_step)
        if self.engine.sentinel is not None:
            self.engine.run_baseline(self._produce(trainer, pl_module, "sentinel"), gather_measurements,
                                     step=trainer.global_step, tier="sentinel")
        self.engine.start_training(trainer.global_step)
        self._seen_step = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        monitor = self.engine.data_monitor
        if monitor is not None and isinstance(batch, dict) and "input_ids" in batch:
            monitor.observe(batch["input_ids"], batch.get("is_human"))
        # once per optimizer step: with gradient accumulation the step count moves every accumulate_grad_batches
        if not self.engine.schedule.steps or self._should_skip_check(trainer) \
                or trainer.global_step == getattr(self, "_seen_step", None):
            return
        self._seen_step = trainer.global_step
        tier = agree_with_rank0(self.engine.due(trainer.global_step))  # every rank runs rank 0's choice
        if tier is None:
            return
        outcome = self.engine.run_scheduled(tier, self._produce(trainer, pl_module),
                                            self._produce(trainer, pl_module, "sentinel"), gather_measurements,
                                            step=trainer.global_step, epoch=trainer.current_epoch)
        self._act(trainer, pl_module, outcome, on_step=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_check(trainer):
            return
        if self.engine.final_check_due(trainer.global_step) or (
                self.engine.save_profile_to is not None and self.engine.last_step != trainer.global_step):
            # judge (and profile) the final model, not an earlier one; Lightning allows no self.log here
            outcome = self._check(trainer, pl_module, after_training=True)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(dict(outcome.log_metrics), step=trainer.global_step)
        if self.engine.save_profile_to is not None and trainer.is_global_zero:
            self.engine.write_profile(source=f"lightning:{type(pl_module).__name__}@step{trainer.global_step}")

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._should_skip_check(trainer) or not self.engine.should_check(trainer.current_epoch) \
                or self.engine.last_checked["full"] == trainer.global_step:  # a step check judged this very model
            return
        self._act(trainer, pl_module, self._check(trainer, pl_module), on_step=False)

    def _act(self, trainer: Trainer, pl_module: LightningModule, outcome: Any, *, on_step: bool) -> None:
        """Log a check's metrics through ``pl_module.log`` and stop training (on every rank) if decided."""
        for name, value in outcome.log_metrics.items():
            # identical on every rank (merged states): syncing is exact and silences Lightning's DDP warning.
            # A step check reaches the loggers directly below: through self.log, Lightning would write it only
            # at steps that are multiples of log_every_n_steps
            pl_module.log(name, value, on_step=on_step, on_epoch=not on_step, sync_dist=trainer.world_size > 1,
                          logger=not on_step)
        if on_step and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(dict(outcome.log_metrics), step=trainer.global_step)
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


def _generate_via_method(module: Any, prompts: list, engine: GuardEngine) -> GeneratedBatch:
    """Drive a LightningModule's own HF-style ``generate(input_ids=..., max_new_tokens=..., ...)``."""
    eos, pad = special_ids(engine.tokenizer, module)
    seqs, finished = generate_continuations(
        module.generate, prompts, device=model_device(module), max_new_tokens=engine.max_new_tokens,
        eos_token_id=eos, pad_token_id=pad, batch_size=engine.batch_size, generation_kwargs=engine.generation_kwargs)
    return GeneratedBatch(sequences=seqs, finished=finished)


class AnchorMixDataModule(LightningDataModule):
    """Training batches with a guaranteed human floor, for ``trainer.fit(model, datamodule=...)``.

    Builds an :class:`~collapseguard.AnchorMixSampler` over ``dataset`` (one provenance label per
    index) and shards it across the trainer's processes itself, so run the trainer with
    ``use_distributed_sampler=False``. Give ``datamodule.sampler`` to
    ``CollapseGuard(..., on_collapse=ReweightPolicy(datamodule.sampler))`` to steer the floor.
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
