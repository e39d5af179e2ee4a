"""Hugging Face Trainer adapter: :class:`CollapseGuardCallback`, a ``transformers.TrainerCallback``.

>>> from collapseguard.integrations.transformers import CollapseGuardCallback  # doctest: +SKIP
>>> trainer = transformers.Trainer(..., callbacks=[CollapseGuardCallback(gold, on_collapse="halt")])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from collapseguard.detection.datastream import DataStreamMonitor
from collapseguard.detection.thresholds import Thresholds
from collapseguard.gold.goldset import GoldSet
from collapseguard.gold.profiles import ReferenceProfile
from collapseguard.gold.provenance import ProvenanceLedger
from collapseguard.guard.generation import GenerationSettings, ModelHooks
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.options import accepts_old_spellings
from collapseguard.guard.reweighting import ReweightPolicy
from collapseguard.guard.schedule import CheckSchedule
from collapseguard.integrations._hf import (
    Attachable,
    checkpoint_folder,
    load_state,
    save_state,
    warn_unattached,
)
from collapseguard.integrations._torch import (
    agree_with_rank0,
    build_engine,
    check_tokenizer_fits,
    gather_measurements,
    produce_from_callable,
    produce_from_hf_model,
)

log = logging.getLogger("collapseguard")


class CollapseGuardCallback(Attachable, TrainerCallback):
    """Check a model for collapse at epoch ends or on optimizer steps (``schedule=``); log, warn, halt or reweight.

    Args:
        gold: the human gold set (:class:`~collapseguard.GoldSet`), or the path of a JSONL gold file.
        tokenizer: the model's tokenizer, or the path of a saved one; default: the Trainer's ``processing_class``.
        hooks: :class:`~collapseguard.ModelHooks` for a model that is not a Hugging Face ``PreTrainedModel``
            (``generate(model, prompts)``, ``sample(model, n)``, ``score(model, rows)``; ``model``: the Trainer's).
        generation: :class:`~collapseguard.GenerationSettings` (or a dict of its fields): prompts per check, their
            length, tokens generated, samples per prompt, batch size, seed, sampling settings.
        thresholds: a :class:`~collapseguard.Thresholds`, a preset name (``"balanced"``, ``"strict"``,
            ``"lenient"``), a dict of fields or a YAML/JSON file.
        on_collapse: ``"warn"`` (log), ``"halt"`` or :class:`~collapseguard.HaltPolicy` (stop training after
            ``patience`` consecutive critical checks, on every rank), or :class:`~collapseguard.ReweightPolicy` (raise
            the human share of its sampler as alerts grow; the sampler of an :class:`AnchorMixTrainer`).
        on_error: ``"warn"`` (a failing check becomes a fault alert; training goes on) or ``"raise"``.
        schedule: a :class:`~collapseguard.CheckSchedule` (or ``"steps"``, ``"epoch"``, ``"steps=200,sentinel=20"``):
            full checks on epoch ends (default: every one) or every n optimizer steps, a cheap sentinel in between,
            within a cap on the guard's share of training time.
        score_gold: also score the gold continuations teacher-forced (banded gold perplexity, entropy): the
            model-side evidence that tells a learning model from a collapsing one.
        reference_profile: a :class:`~collapseguard.ReferenceProfile` (or its JSON path): judge every check against
            this trusted model as well.
        save_profile_to: write a reference profile of the final model to this path at the end of training.
        alert_log: append a JSONL trail (one line per check and per alert) to this path; written by rank 0.
        provenance: a :class:`~collapseguard.gold.provenance.ProvenanceLedger` logged when training starts.
        data_monitor: a :class:`~collapseguard.DataStreamMonitor` fed with the training batches (by
            :class:`AnchorMixTrainer`) and judged at every check (its alerts never halt training).

    Metrics land in ``state.log_history`` as ``collapseguard/<name>`` and are added to evaluation metrics as
    ``eval_collapseguard/<name>``, so that ``metric_for_best_model="collapseguard/health"`` (with
    ``greater_is_better=True``) works. They reach the ``report_to`` integrations too once the guard runs first:
    call :meth:`attach` after building the trainer. The guard's state is saved in every checkpoint and restored on
    resume with ``restore_callback_states_from_checkpoint=True``.

    With a step ``schedule`` it checks on optimizer steps (``on_step_end``; gradient accumulation counts once),
    mid-epoch, and halts there. When ``metric_for_best_model`` names a ``collapseguard/`` metric, every evaluation
    that finds no full check at its step runs one first, so step-based ``eval_strategy`` / ``save_strategy`` select
    checkpoints by it.
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
        self._pending_logs: dict[str, float] = {}
        self._latest: dict[str, float] = {}

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       processing_class: Any = None, model: Any = None, **kwargs: Any) -> None:
        saved = load_state(args, state, type(self).__name__)
        if saved is not None:
            self.engine.load_state_dict(saved)
        tokenizer = self.engine.tokenizer if self.engine.tokenizer is not None else processing_class
        self.engine.setup(tokenizer, rank=args.process_index, world_size=args.world_size)
        if model is not None and self.hooks.generate is None and self.hooks.sample is None:
            check_tokenizer_fits(model, self.engine.tokenizer)
        elif self.engine.sentinel is not None:
            self.engine.disable_sentinel("the sentinel scores gold through a Hugging Face model's forward; this guard "
                                         "generates through hooks")
        warn_unattached(args, type(self).__name__, self._attached)
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
        if self.hooks.sample is not None:
            return produce_from_callable(self.engine, model, self.hooks.sample, "sample", rank, world, self.hooks.score)
        if self.hooks.generate is not None:
            return produce_from_callable(self.engine, model, self.hooks.generate, "generate", rank, world)
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
        # the trail and a halt point at the checkpoint; the guard's own state rides along in it
        self.engine.note_checkpoint(state.global_step, checkpoint_folder(args, state.global_step))
        save_state(args, state, type(self).__name__, self.engine.state_dict())

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


class AnchorMixTrainer(Trainer):
    """A ``transformers.Trainer`` whose training batches come from an :class:`~collapseguard.AnchorMixSampler`.

    The sampler shards batches across processes itself (``num_replicas``/``rank``), so the
    DataLoader is built here, not re-sharded by accelerate. Pass the same sampler to
    ``CollapseGuardCallback(..., on_collapse=ReweightPolicy(sampler))`` to steer it.
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
