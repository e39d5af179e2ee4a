"""TRL adapter: the HF callback for ``SFTTrainer`` / ``DPOTrainer``, and :class:`GRPOCollapseGuard` for ``GRPOTrainer``.

``SFTTrainer`` and ``DPOTrainer`` are ``transformers.Trainer`` s: :class:`CollapseGuardCallback` (re-exported here)
checks them like any Trainer, on a chat gold set (:meth:`GoldSet.from_pairs` / :meth:`GoldSet.from_chat`)
whose prompts are rendered with the tokenizer's chat template, optionally with ``samples_per_prompt=k``.

``GRPOTrainer`` already samples a group of ``num_generations`` completions for every prompt. The GRPO guard judges
those, with no generation of its own: its :attr:`GRPOCollapseGuard.reward_func` is a reward function that returns 0
for every completion (give it weight 0: ``GRPOConfig(reward_weights=[..., 0.0])``) and, through TRL's public reward
interface, receives every group the trainer generated -- with ``use_vllm=True`` too, since TRL scores vLLM's
completions through the same reward functions. At each TRL log (every ``logging_steps``; ``every_n_steps`` spaces
checks further) the guard judges the groups received since the last check together with the ``entropy`` and
``frac_reward_zero_std`` TRL logged, through :class:`~collapseguard.guard.engine.GuardEngine` and the same thresholds
as every other guard, and adds its metrics to that log (``collapseguard/distinct_k``, ``.../policy_entropy``,
``.../health``): they reach ``report_to`` and ``trainer.state.log_history`` like TRL's own.

>>> guard = GRPOCollapseGuard(on_collapse="halt")                                       # doctest: +SKIP
>>> GRPOTrainer(model, reward_funcs=[my_reward, guard.reward_func], callbacks=[guard],  # doctest: +SKIP
...             args=GRPOConfig(..., reward_weights=[1.0, 0.0]))
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerControl, TrainerState, TrainingArguments

from collapseguard._validation import Interval, OneOf, validate
from collapseguard.detection.thresholds import Thresholds
from collapseguard.guard.engine import GeneratedBatch, GuardEngine
from collapseguard.integrations.transformers import _LIVE, CollapseGuardCallback

log = logging.getLogger("collapseguard")

__all__ = ["CollapseGuardCallback", "GRPOCollapseGuard"]

# TRL's logged name -> the guard's metric
TRL_STATS = {"entropy": "policy_entropy", "frac_reward_zero_std": "frac_reward_zero_std"}


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a str, or (conversational) the contents of its messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "\n".join(m["content"] if isinstance(m.get("content"), str) else
                         " ".join(p.get("text", "") for p in m.get("content", []) if isinstance(p, dict))
                         for m in completion if isinstance(m, dict))
    raise TypeError(f"a TRL completion is a str or a list of messages, got {type(completion).__name__}")


def _gather(items: list[Any]) -> list[Any]:
    """Every process's items in rank order (the global batch, whose groups TRL keeps contiguous)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    from accelerate.utils import gather_object

    return list(gather_object(items))


class _GroupTap:
    """The reward function TRL calls with every generated group; it only records them and pays 0."""

    __name__ = "collapseguard"

    def __init__(self, guard: GRPOCollapseGuard) -> None:
        self.guard = guard

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        self.guard.observe(_gather([completion_text(c) for c in completions]),
                           _gather([json.dumps(p, sort_keys=True, default=str) for p in prompts]))
        return [0.0] * len(completions)


class GRPOCollapseGuard(CollapseGuardCallback):
    """Judge a ``GRPOTrainer``'s own groups and logged policy statistics for collapse; warn or halt.

    Pass :attr:`reward_func` among the trainer's ``reward_funcs`` (weight 0) and the guard among its ``callbacks``.

    Judged (against the run's own start -- the mean of its first ``own_start_checks`` checks -- since there is no
    human reference for the trainer's prompts): within-group diversity (``distinct_k``: functionally distinct
    completions among the ``num_generations`` of a prompt; ``within_distinct_2``; ``within_similarity``), TRL's
    policy ``entropy`` (as ``policy_entropy``). TRL's ``frac_reward_zero_std`` (groups with no learning signal) is
    logged and quoted in the alerts, never judged alone: a policy too random to earn any reward has equal rewards in
    its groups too.

    Args:
        thresholds: a :class:`~collapseguard.Thresholds`, preset name, dict or file (``distinct_k_*``,
            ``within_similarity_*``, ``entropy_*``, ``own_start_checks``, ``patience``).
        on_collapse: ``"warn"`` or ``"halt"`` (stop training after ``patience`` consecutive critical checks).
        on_error: ``"warn"`` (a check that fails becomes a fault alert) or ``"raise"``.
        every_n_steps: at least this many optimizer steps between checks (a check runs at a TRL log).
        patience: consecutive critical checks before halting.
        alert_log: append the guard's JSONL trail here.

    Its state (history, counters) is saved in checkpoints and restored on resume with
    ``restore_callback_states_from_checkpoint=True``, like :class:`CollapseGuardCallback`.
    """

    _options = ("thresholds", "on_collapse", "on_error", "patience", "alert_log")
    _narrowed = ("on_collapse",)  # GRPO draws its own completions: there is no data sampler to reweight

    def __init__(self, *, thresholds: Thresholds | str | dict[str, Any] | None = None,
                 on_collapse: Literal["warn", "halt"] = "warn", on_error: Literal["warn", "raise"] = "warn",
                 every_n_steps: int = 1, patience: int = 1, alert_log: str | Path | None = None) -> None:
        caller = type(self).__name__
        validate(caller, "on_collapse", on_collapse, OneOf("warn", "halt"),
                 fix="reweighting steers a data sampler, and GRPO draws its own completions")
        validate(caller, "every_n_steps", every_n_steps, Interval(int, 1, None))
        # samples_per_prompt is the trainer's num_generations, known at train begin (2 until then)
        self.engine = GuardEngine(None, thresholds=thresholds, on_collapse=on_collapse, on_error=on_error,
                                  patience=patience, alert_log=alert_log, samples_per_prompt=2, score_gold=False,
                                  check_on_train_start=False, caller=caller)
        self.every_n_steps = every_n_steps
        self.generate_fn = self.sample_fn = self.score_fn = None
        self._texts: list[str] = []
        self._prompts: list[str] = []
        self._reported: dict[str, list[float]] = {name: [] for name in TRL_STATS.values()}
        self._last_check_step = 0
        self._split_groups = 0
        self.reward_func = _GroupTap(self)
        self._register()

    def _register(self) -> None:
        self._pending_logs: dict[str, float] = {}
        self._latest: dict[str, float] = {}
        e = self.engine
        settings = json.dumps([e.thresholds.to_dict(), e.on_collapse, self.every_n_steps, e.patience], sort_keys=True)
        self.restore_key = "grpo:" + hashlib.sha256(settings.encode()).hexdigest()[:16]
        _LIVE[self.restore_key] = self

    # ------------------------------------------------------------------ what TRL hands over
    def observe(self, completions: list[str], prompts: list[str]) -> None:
        """Keep one generation batch's completions (every process's, in order) until the next check."""
        self._texts.extend(completions)
        self._prompts.extend(prompts)

    def _groups(self) -> list[str]:
        """The completions received since the last check, in whole groups of one prompt each."""
        k = self.engine.samples_per_prompt
        texts, prompts = self._texts, self._prompts
        self._texts, self._prompts = [], []
        kept: list[str] = []
        for i in range(0, len(texts) - k + 1, k):
            if len(set(prompts[i:i + k])) == 1:
                kept.extend(texts[i:i + k])
            else:
                self._split_groups += 1
        if self._split_groups == 1 and len(kept) < len(texts):
            log.warning("collapseguard: completions arrived that are not in groups of num_generations=%d with one "
                        "prompt each; those are skipped", k)
        return kept

    def _produce(self, args: TrainingArguments, model: Any) -> Any:
        def produce() -> GeneratedBatch:
            reported = {name: values for name, values in self._reported.items() if values}
            self._reported = {name: [] for name in TRL_STATS.values()}
            return GeneratedBatch(sequences=self._groups(), reported=reported)

        return produce

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       processing_class: Any = None, model: Any = None, **kwargs: Any) -> None:
        k = getattr(args, "num_generations", None)
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"GRPOCollapseGuard judges GRPO groups: it needs a GRPOTrainer with num_generations >= 2 "
                             f"(got {k!r}); for other trainers use CollapseGuardCallback")
        if self.engine.monitor is None:
            self.engine.samples_per_prompt = k
            self.engine.max_new_tokens = int(getattr(args, "max_completion_length", None) or 10**6)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)  # a processor holds its tokenizer
        self.engine.setup(tokenizer, rank=args.process_index, world_size=args.world_size)
        self._last_check_step = state.global_step
        self._move_to_front()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> TrainerControl:
        return control  # checks run at TRL's logs

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, model: Any = None, **kwargs: Any) -> TrainerControl:
        if logs is None or not any(key in logs for key in ("loss", *TRL_STATS)):
            return control  # not a training log (evaluation, the final summary)
        for trl_name, name in TRL_STATS.items():
            value = logs.get(trl_name)
            if isinstance(value, int | float):
                self._reported[name].append(float(value))
        if state.global_step - self._last_check_step < self.every_n_steps or not self._texts:
            return control
        self._last_check_step = state.global_step
        epoch = int(state.epoch or 0)
        outcome = self.engine.run_check(self._produce(args, model), step=state.global_step, epoch=epoch)
        self._latest = dict(outcome.log_metrics)
        logs.update(outcome.log_metrics)  # this guard runs first: report_to integrations read them next
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(outcome.log_metrics)
        if outcome.should_stop:
            control.should_training_stop = True
            log.error("%s", outcome.reason)
        return control
