"""Hugging Face Trainer adapter: :class:`CollapseGuardCallback`, a ``transformers.TrainerCallback``.

>>> from collapseguard.integrations.transformers import CollapseGuardCallback  # doctest: +SKIP
>>> trainer = transformers.Trainer(..., callbacks=[CollapseGuardCallback(gold, on_collapse="halt")])  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler, ExportableState

from collapseguard.detection.datastream import DataStreamMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.provenance import ProvenanceLedger
from collapseguard.guard.options import GuardCallbackMeta
from collapseguard.guard.sampling import AnchorMixSampler
from collapseguard.guard.schedule import CheckSchedule
from collapseguard.integrations._torch import (
    agree_with_rank0,
    build_engine,
    check_tokenizer_fits,
    gather_measurements,
    produce_from_callable,
    produce_from_hf_model,
)

log = logging.getLogger("collapseguard")

# HF restores an ExportableState callback by calling type(cb)(**stored_args) with JSON args.
# A gold set is not JSON, so the stored args hold only a key, and the class hands back the
# live guard the user built with the same gold set and settings (GuardCallbackMeta calls _restore).
_LIVE: weakref.WeakValueDictionary[str, CollapseGuardCallback] = weakref.WeakValueDictionary()


class CollapseGuardCallback(TrainerCallback, ExportableState, metaclass=GuardCallbackMeta):
    """Check a model for collapse at epoch ends or on optimizer steps (``schedule=``); log, warn, halt or reweight.

    Args: the same as the Lightning :class:`~collapseguard.integrations.lightning.CollapseGuard`'s, name for name
    (one specification, :data:`collapseguard.guard.options.OPTIONS`, holds them both), except that the model-facing
    functions (``generate_fn``, ``sample_fn``, ``score_fn``) receive the Trainer's model, and that the tokenizer
    defaults to the Trainer's ``processing_class``. ``on_collapse="reweight"`` steers the sampler of an
    :class:`AnchorMixTrainer`.

    Metrics land in ``state.log_history`` as ``collapseguard/<name>``, reach the ``report_to``
    integrations, and are added to evaluation metrics as ``eval_collapseguard/<name>`` so that
    ``metric_for_best_model="collapseguard/health"`` (with ``greater_is_better=True``) works.
    Resume restores the guard's state with ``restore_callback_states_from_checkpoint=True``.

    ``schedule=CheckSchedule(every_n_steps=..., sentinel_every_n_steps=...)`` (or ``"steps"``) checks on optimizer
    steps (``on_step_end``; gradient accumulation counts once), mid-epoch, and halts there. When
    ``metric_for_best_model`` names a ``collapseguard/`` metric, every evaluation that finds no full check at its
    step runs one first, so step-based ``eval_strategy`` / ``save_strategy`` select checkpoints by it.
    """

    def __init__(self, gold: GoldSet | str | Path, tokenizer: Any = None, *,
                 generate_fn: Callable[..., Any] | None = None, sample_fn: Callable[..., Any] | None = None,
                 score_fn: Callable[..., Any] | None = None,
                 thresholds: Thresholds | str | dict[str, Any] | None = None,
                 on_collapse: Literal["warn", "halt", "reweight"] = "warn",
                 on_error: Literal["warn", "raise"] = "warn",
                 every_n_epochs: int = 1, schedule: CheckSchedule | str | dict[str, Any] | None = None,
                 num_samples: int = 64, prompt_length: int = 16, max_new_tokens: int = 32,
                 samples_per_prompt: int = 1, patience: int = 1, seed: int = 0,
                 generation_kwargs: dict[str, Any] | None = None, score_gold: bool = True, batch_size: int = 32,
                 check_on_train_start: bool = True, zero3_gather: bool = True,
                 reference_profile: ReferenceProfile | str | Path | None = None,
                 save_profile_to: str | Path | None = None, alert_log: str | Path | None = None,
                 anchor_sampler: AnchorMixSampler | None = None, max_human_fraction: float = 0.8,
                 reweight_step: float = 0.1, recovery_checks: int = 2,
                 provenance: ProvenanceLedger | None = None, data_monitor: DataStreamMonitor | None = None) -> None:
        self.engine = build_engine(type(self).__name__, locals())
        self.generate_fn, self.sample_fn, self.score_fn = generate_fn, sample_fn, score_fn
        self._register()

    def _register(self) -> None:
        self._pending_logs: dict[str, float] = {}
        self._latest: dict[str, float] = {}
        e = self.engine
        fingerprint = e.gold.fingerprint[:16] if e.gold is not None else "nogold"
        self.restore_key = f"{type(self).__name__}:{fingerprint}:{e.every_n_epochs}:{e.num_samples}:" \
                           f"{e.max_new_tokens}:{e.seed}"
        _LIVE[self.restore_key] = self

    @classmethod
    def _restore(cls, key: str) -> CollapseGuardCallback:
        """The live guard a checkpoint's state belongs to (HF rebuilds callbacks from their stored args)."""
        live = _LIVE.get(key)
        if live is None:
            raise ValueError(f"cannot restore {cls.__name__} state: build the callback with the same gold set and "
                             "settings as the checkpointed run and pass it to the Trainer")
        return live

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       processing_class: Any = None, model: Any = None, **kwargs: Any) -> None:
        tokenizer = self.engine.tokenizer if self.engine.tokenizer is not None else processing_class
        self.engine.setup(tokenizer, rank=args.process_index, world_size=args.world_size)
        if model is not None and self.generate_fn is None and self.sample_fn is None:
            check_tokenizer_fits(model, self.engine.tokenizer)
        elif self.engine.sentinel is not None:
            self.engine.disable_sentinel("the sentinel scores gold through a Hugging Face model's forward; this guard "
                                         "generates through generate_fn / sample_fn")
        self._move_to_front()
        if model is not None:
            optimizer = kwargs.get("optimizer")
            self.engine.run_baseline(self._produce(args, model, optimizer), gather_measurements,
                                     step=state.global_step)
            if self.engine.sentinel is not None:
                self.engine.run_baseline(self._produce(args, model, optimizer, tier="sentinel"), gather_measurements,
                                         step=state.global_step, tier="sentinel")
        self.engine.start_training(state.global_step)

    def _produce(self, args: TrainingArguments, model: Any, optimizer: Any = None,
                 tier: str = "full") -> Callable[[], Any]:
        rank, world = args.process_index, args.world_size
        if self.sample_fn is not None:
            return produce_from_callable(self.engine, model, self.sample_fn, "sample", rank, world, self.score_fn)
        if self.generate_fn is not None:
            return produce_from_callable(self.engine, model, self.generate_fn, "generate", rank, world)
        # under DeepSpeed ZeRO-3 the optimizer reaches the parameter coordinator (gathered generation)
        return produce_from_hf_model(self.engine, model, self.engine.tokenizer, rank, world, holders=(optimizer,),
                                     tier=tier)

    def _check(self, args: TrainingArguments, state: TrainerState, model: Any, epoch: int,
               optimizer: Any = None, after_training: bool = False) -> Any:
        return self.engine.run_check(self._produce(args, model, optimizer), gather_measurements,
                                     step=state.global_step, epoch=epoch, after_training=after_training)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: Any = None, optimizer: Any = None, **kwargs: Any) -> None:
        final = self.engine.final_check_due(state.global_step) or (
            self.engine.save_profile_to is not None and self.engine.last_step != state.global_step)
        if final and model is not None:  # judge (and profile) the final model, not an earlier one
            outcome = self._check(args, state, model, round(state.epoch or 0) - 1, optimizer, after_training=True)
            self._act(outcome, state, control)
        if self.engine.save_profile_to is not None and state.is_world_process_zero:
            self.engine.write_profile(source=f"transformers:{type(model).__name__}@step{state.global_step}")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # the Trainer names its checkpoint folders this way (PREFIX_CHECKPOINT_DIR); the trail and a halt point at it
        self.engine.note_checkpoint(state.global_step, os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        sampler = self.engine.anchor_sampler
        if sampler is not None and callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(round(state.epoch or 0))

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: Any = None, optimizer: Any = None, **kwargs: Any) -> TrainerControl:
        epoch = round(state.epoch or 0) - 1
        if not self.engine.should_check(epoch) or self.engine.last_checked["full"] == state.global_step:
            return control  # (a step check already judged this very model)
        return self._act(self._check(args, state, model, epoch, optimizer), state, control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, optimizer: Any = None, **kwargs: Any) -> TrainerControl:
        # called once per optimizer step (after gradient accumulation); every rank runs rank 0's choice
        if not self.engine.schedule.steps:
            return control  # epoch checks only: no collective at every step
        tier = agree_with_rank0(self.engine.due(state.global_step))
        if tier is None or model is None:
            return control
        outcome = self.engine.run_scheduled(tier, self._produce(args, model, optimizer),
                                            self._produce(args, model, optimizer, tier="sentinel"),
                                            gather_measurements, step=state.global_step, epoch=int(state.epoch or 0))
        return self._act(outcome, state, control)

    def _act(self, outcome: Any, state: TrainerState, control: TrainerControl) -> TrainerControl:
        """Log a check's metrics (history, report_to at the next on_log, evaluation metrics) and halt if decided."""
        if outcome.tier == "full":
            self._latest = dict(outcome.log_metrics)
        self._pending_logs = dict(outcome.log_metrics)
        state.log_history.append({**outcome.log_metrics, "epoch": state.epoch, "step": state.global_step})
        control.should_log = True  # forward them to the report_to integrations at once (on_log)
        if outcome.should_stop:
            control.should_training_stop = True
            log.error("%s", outcome.reason)
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs is not None and self._pending_logs:
            logs.update(self._pending_logs)
            self._pending_logs = {}

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, model: Any = None, **kwargs: Any) -> None:
        if metrics is None:
            return
        best = str(getattr(args, "metric_for_best_model", None) or "")
        if best.removeprefix("eval_").startswith("collapseguard/") and model is not None \
                and self.engine.monitor is not None and self.engine.last_checked["full"] != state.global_step:
            # checkpoint selection reads the metric now, at this step: a check from steps ago (or none yet, the
            # first evaluation of a step-scheduled run) would crash it or pick by a stale verdict
            outcome = self._check(args, state, model, int(state.epoch or 0), kwargs.get("optimizer"))
            self._act(outcome, state, control)
        for name, value in self._latest.items():
            metrics.setdefault(f"eval_{name}", value)
        if best.removeprefix("eval_") == "collapseguard/health":
            # a check that was not judged has no health: NaN is never "best", and HF finds the key it needs
            metrics.setdefault("eval_collapseguard/health", float("nan"))

    def _move_to_front(self) -> None:
        """Run first in the Trainer's callback list, so on_log adds our metrics before the
        report_to integrations (registered before user callbacks) read them."""
        frame = inspect.currentframe()
        while frame is not None:
            handler = frame.f_locals.get("self")
            if isinstance(handler, CallbackHandler):
                if self in handler.callbacks:
                    handler.callbacks.remove(self)
                    handler.callbacks.insert(0, self)
                return
            frame = frame.f_back

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {"args": {"_restore_key": self.restore_key}, "attributes": {"guard_state": self.engine.state_dict()}}

    @property
    def guard_state(self) -> dict[str, Any]:
        return self.engine.state_dict()

    @guard_state.setter
    def guard_state(self, value: dict[str, Any]) -> None:
        self.engine.load_state_dict(value)


class AnchorMixTrainer(Trainer):
    """A ``transformers.Trainer`` whose training batches come from an :class:`~collapseguard.AnchorMixSampler`.

    The sampler shards batches across processes itself (``num_replicas``/``rank``), so the
    DataLoader is built here, not re-sharded by accelerate. Pass the same sampler to
    ``CollapseGuardCallback(..., on_collapse="reweight", anchor_sampler=sampler)`` to steer it.
    The HF Trainer counts steps assuming every epoch has the same length, so give the sampler
    ``allow_repeat_anchors=True`` (or a human pool large enough for the highest floor):
    otherwise a raised floor shortens epochs and resumed runs miscount them.
    """

    def __init__(self, *args: Any, anchor_sampler: Any, data_monitor: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.anchor_sampler = anchor_sampler
        self.data_monitor = data_monitor  # the same DataStreamMonitor as the callback's: fed here, judged there
        if not getattr(anchor_sampler, "allow_repeat_anchors", True):
            log.warning("AnchorMixTrainer: anchor_sampler has allow_repeat_anchors=False; if a raised floor "
                        "outgrows the human pool, epochs shorten and the Trainer's epoch count drifts")

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if self.data_monitor is not None and "input_ids" in inputs:
            self.data_monitor.observe(inputs["input_ids"], inputs.get("is_human"))
        return super().training_step(model, inputs, *args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_sampler=self.anchor_sampler, collate_fn=self.data_collator,
                          num_workers=self.args.dataloader_num_workers)
