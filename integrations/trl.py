"""TRL adapter: the HF callback for ``SFTTrainer`` / ``DPOTrainer``, and :class:`GRPOCollapseGuard` for ``GRPOTrainer``.

``SFTTrainer`` and ``DPOTrainer`` are ``transformers.Trainer`` s: :class:`CollapseGuardCallback` (re-exported here)
checks them like any Trainer, on a chat gold set (:meth:`GoldSet.from_pairs` / :meth:`GoldSet.from_chat`)
whose prompts are rendered with the tokenizer's chat template, optionally with
``generation=GenerationSettings(samples_per_prompt=k)``.

``GRPOTrainer`` already samples a group of ``num_generations`` completions for every prompt. The GRPO guard judges
those, with no generation of its own: its :attr:`GRPOCollapseGuard.reward_func` is a reward function that returns 0
for every completion (give it weight 0: ``GRPOConfig(reward_weights=[..., 0.0])``) and, through TRL's public reward
interface, receives every group the trainer generated -- with ``use_vllm=True`` too, since TRL scores vLLM's
completions through the same reward functions. At each TRL log (every ``logging_steps``; ``every_n_steps`` spaces
checks further) the guard judges the groups received since the last check together with the ``entropy`` and
``frac_reward_zero_std`` TRL logged, through the framework-free :class:`~collapseguard.guard.rollout.RolloutGuard`
(observe groups, observe statistics, check) and the same thresholds as every other guard, and adds its metrics to
that log (``collapseguard/distinct_k``, ``.../policy_entropy``,
``.../health``): they reach ``report_to`` and ``trainer.state.log_history`` like TRL's own.

>>> guard = GRPOCollapseGuard(on_collapse="halt")                                       # doctest: +SKIP
>>> trainer = GRPOTrainer(model, reward_funcs=[my_reward, guard.reward_func], callbacks=[guard],  # doctest: +SKIP
...                       args=GRPOConfig(..., reward_weights=[1.0, 0.0]))
>>> guard.attach(trainer)  # first among the callbacks: its metrics reach report_to   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from collapseguard._deprecation import deprecate_kwargs
from collapseguard._validation import NONE, InstanceOf, Interval, OneOf, Satisfies, validate
from collapseguard.detection.thresholds import Thresholds
from collapseguard.guard.halting import HaltPolicy
from collapseguard.guard.options import merged_on_collapse
from collapseguard.guard.rollout import RolloutGuard
from collapseguard.guard.steering import SteerPolicy
from collapseguard.integrations._hf import (
    Attachable,
    checkpoint_folder,
    load_state,
    save_state,
    warn_unattached,
)
from collapseguard.integrations.transformers import CollapseGuardCallback

log = logging.getLogger("collapseguard")

CORRECT = Satisfies(lambda c: callable(c) or (isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str)
                                              and isinstance(c[1], int | float) and not isinstance(c[1], bool)),
                    "a (reward function name, threshold) pair or a callable")

__all__ = ["CollapseGuardCallback", "GRPOCollapseGuard"]

TRL_STATS = ("entropy", "frac_reward_zero_std")
"""What TRL logs that the guard judges (``entropy`` as ``policy_entropy``) or quotes."""


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
    """The reward function TRL calls with every generated group: it hands the groups (and their correctness) to the
    guard and pays 0."""

    __name__ = "collapseguard"

    def __init__(self, guard: GRPOCollapseGuard) -> None:
        self.guard = guard
        self.called = False

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        self.called = True
        flags = self.guard._correctness(prompts, completions, kwargs)
        self.guard.rollout.observe_groups(_gather([json.dumps(p, sort_keys=True, default=str) for p in prompts]),
                                          _gather([completion_text(c) for c in completions]),
                                          correct=None if flags is None else _gather(flags))
        return [0.0] * len(completions)


class _Recorded:
    """A reward function that keeps its last outputs, so the guard reads correctness from rewards already computed."""

    def __init__(self, func: Callable[..., list[float]]) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", type(func).__name__)
        self.last: list[float] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> list[float]:
        self.last = list(self.func(*args, **kwargs))
        return self.last


CorrectSpec = tuple[str, float] | Callable[..., Sequence[bool]]


class GRPOCollapseGuard(Attachable, TrainerCallback):
    """Judge a ``GRPOTrainer``'s own groups and logged policy statistics for collapse; warn or halt.

    Pass :attr:`reward_func` among the trainer's ``reward_funcs`` (weight 0) and the guard among its ``callbacks``;
    with ``correct=(name, threshold)``, pass ``reward_funcs=guard.reward_funcs([...])`` instead, which records the named
    reward as it runs and appends :attr:`reward_func`.

    Judged (against the run's own start -- the mean of its first ``own_start_checks`` checks -- since there is no
    human reference for the trainer's prompts): within-group diversity (``distinct_k``: functionally distinct
    completions among the ``num_generations`` of a prompt; ``within_distinct_2``; ``within_similarity``), TRL's
    policy ``entropy`` (as ``policy_entropy``). TRL's ``frac_reward_zero_std`` (groups with no learning signal) is
    logged and quoted in the alerts, never judged alone: a policy too random to earn any reward has equal rewards in
    its groups too. With ``correct=``, each completion is also judged right or wrong, and pass@1 ... pass@k (k =
    ``num_generations``, unbiased, from the groups themselves) and the share of all-correct, mixed and all-wrong
    groups are logged (``collapseguard/pass_at_1``, ``.../pass_at_k``, ``.../frac_all_correct``, ...).

    The work is :class:`~collapseguard.guard.rollout.RolloutGuard`'s; this adapter feeds it TRL's groups and logs.

    Args:
        gold_set: not taken (positional only, so that ``GRPOCollapseGuard(gold)`` is refused with the fix): there is
            no human answer for the trainer's prompts.
        thresholds: a :class:`~collapseguard.Thresholds`, preset name, dict or file (``distinct_k_*``,
            ``within_similarity_*``, ``entropy_*``, ``own_start_checks``, ``patience``).
        on_collapse: ``"warn"``, ``"halt"`` or :class:`~collapseguard.HaltPolicy` (stop training after ``patience``
            consecutive critical checks) or ``"steer"``: under TRL's adaptive entropy control (``GRPOConfig(use_adaptive_entropy=True)``), raise
            ``entropy_target`` (below which the entropy bonus applies) a step per warn, two per critical, up to the
            policy entropy of the run's own start, and lower it again after clean checks
            (:class:`~collapseguard.guard.steering.SteerPolicy`); each change is logged, and
            ``collapseguard/steer/entropy_target`` carries the value.
        on_error: ``"warn"`` (a check that fails becomes a fault alert) or ``"raise"``.
        every_n_steps: at least this many optimizer steps between checks (a check runs at a TRL log).
        alert_log: append the guard's JSONL trail here.
        correct: how a completion counts as right: ``(reward_name, threshold)`` (the named reward function's output
            at or above the threshold: its rewards are reused, not computed again), or a callable
            ``(prompts, completions, **columns) -> list[bool]`` that gets what TRL gives reward functions (the
            dataset's columns, e.g. the reference answer). ``None``: no correctness, no pass@k.
        steer_step: with ``"steer"``, one step as a share of the way from the starting ``entropy_target`` to the
            ceiling.

    Its state (history, counters, and with ``"steer"`` where the knob stands) is saved in checkpoints and restored on
    resume with ``restore_callback_states_from_checkpoint=True``, like :class:`CollapseGuardCallback`: a resumed run
    steers on from the checkpoint's ``entropy_target``, not from the config's. Call :meth:`attach` after building the
    trainer for its metrics to reach the ``report_to`` integrations.
    """

    @deprecate_kwargs({"patience": "on_collapse.patience"}, merge={"on_collapse": merged_on_collapse})
    def __init__(self, gold_set: None = None, /, *, thresholds: Thresholds | str | dict[str, Any] | None = None,
                 on_collapse: Literal["warn", "halt", "steer"] | HaltPolicy = "warn",
                 on_error: Literal["warn", "raise"] = "warn", every_n_steps: int = 1,
                 alert_log: str | Path | None = None, correct: CorrectSpec | None = None,
                 steer_step: float = 0.25) -> None:
        caller = type(self).__name__
        if gold_set is not None:
            raise TypeError(f"{caller} takes no gold set: it judges the groups GRPOTrainer generates, against the "
                            "run's own start. Use GRPOCollapseGuard(correct=..., ...) with keyword arguments; a gold "
                            "set goes to CollapseGuardCallback(gold) for SFTTrainer or DPOTrainer")
        validate(caller, "on_collapse", on_collapse, OneOf("warn", "halt", "steer"),
                 InstanceOf(HaltPolicy, name="a HaltPolicy"),
                 fix="reweighting steers a data sampler, and GRPO draws its own completions; 'steer' raises the "
                     "entropy target of TRL's adaptive entropy control")
        validate(caller, "every_n_steps", every_n_steps, Interval(int, 1, None))
        validate(caller, "correct", correct, CORRECT, NONE,
                 fix="pass (reward_function_name, threshold), e.g. ('accuracy_reward', 1.0), or a callable "
                     "(prompts, completions, **columns) -> list[bool]")
        # the group size is the trainer's num_generations, known at train begin (2 until then)
        self.rollout = RolloutGuard(2, thresholds=thresholds, on_collapse="warn" if on_collapse == "steer" else on_collapse,
                                    on_error=on_error, alert_log=alert_log, caller=caller)
        self.on_collapse = on_collapse
        self.steer_step = steer_step
        SteerPolicy(0.0, steer_step, caller=caller)  # validates steer_step now, not at train begin
        self.steering: SteerPolicy | None = None
        self._steer_restored: dict[str, Any] | None = None  # a checkpoint's steering, applied at train begin
        self.engine = self.rollout.engine
        self.correct = correct
        self.every_n_steps = every_n_steps
        self._last_check_step = 0
        self._recorded: _Recorded | None = None
        self.reward_func = _GroupTap(self)
        self._latest: dict[str, float] = {}

    # ------------------------------------------------------------------ what TRL hands over
    def reward_funcs(self, funcs: Sequence[Any]) -> list[Any]:
        """The trainer's reward functions for ``GRPOTrainer(reward_funcs=...)``: the one ``correct=`` names records its
        outputs as it runs (returned unchanged), and :attr:`reward_func` comes last (give it weight 0 in
        ``GRPOConfig(reward_weights=[..., 0.0])``).

        Raises:
            ValueError: ``correct=`` names no function among ``funcs``.
        """
        funcs = list(funcs)
        if isinstance(self.correct, tuple):
            name = self.correct[0]
            names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
            if name not in names:
                raise ValueError(f"GRPOCollapseGuard: correct={self.correct!r} names no reward function among "
                                 f"{names}: pass the name of the one that pays for a right answer")
            i = names.index(name)
            self._recorded = funcs[i] = _Recorded(funcs[i])
        return [*funcs, self.reward_func]

    def _steer(self, args: TrainingArguments, outcome: Any, step: int) -> None:
        """Move ``args.entropy_target`` (TRL reads it at every step under adaptive entropy control) by the verdict;
        the ceiling is the policy entropy of the run's own start, the level at which it still explored."""
        steering = self.steering
        assert steering is not None
        start = self.rollout.own_start("policy_entropy")
        if steering.ceiling is None and start is not None:
            steering.set_ceiling(start)
        new = steering.update(outcome.result, step)
        if new is not None:
            args.entropy_target = new
        outcome.log_metrics.update(steering.log_metrics())

    def _correctness(self, prompts: list[Any], completions: list[Any], kwargs: dict[str, Any]) -> list[bool] | None:
        """Each completion judged right or wrong by ``correct=`` (None without it)."""
        if self.correct is None:
            return None
        if callable(self.correct):
            flags = [bool(x) for x in self.correct(prompts=prompts, completions=completions, **kwargs)]
        else:
            name, threshold = self.correct
            if self._recorded is None or self._recorded.last is None or len(self._recorded.last) != len(completions):
                raise ValueError(f"GRPOCollapseGuard: correct={self.correct!r} reads the rewards of {name!r}, which the "
                                 "guard did not see: build the trainer with reward_funcs=guard.reward_funcs([...]) "
                                 f"(listing {name!r}) instead of appending guard.reward_func yourself")
            rewards, self._recorded.last = self._recorded.last, None
            flags = [r is not None and not math.isnan(float(r)) and float(r) >= threshold for r in rewards]
        if len(flags) != len(completions):
            raise ValueError(f"GRPOCollapseGuard: correct= judged {len(flags)} of {len(completions)} completions: "
                             "return one bool per completion")
        return flags

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       processing_class: Any = None, model: Any = None, **kwargs: Any) -> None:
        saved = load_state(args, state, type(self).__name__)
        if saved is not None:
            self.engine.load_state_dict(saved["guard_state"])
            self.steer_state = saved.get("steer_state")
        k = getattr(args, "num_generations", None)
        if not isinstance(k, int) or k < 2:
            raise ValueError(f"GRPOCollapseGuard judges GRPO groups: it needs a GRPOTrainer with num_generations >= 2 "
                             f"(got {k!r}); for other trainers use CollapseGuardCallback")
        if self.engine.monitor is None:
            self.rollout.group_size = self.engine.samples_per_prompt = k
        tokenizer = getattr(processing_class, "tokenizer", processing_class)  # a processor holds its tokenizer
        self.rollout.tokenizer = tokenizer
        self.rollout.setup(rank=args.process_index, world_size=args.world_size,
                           max_new_tokens=getattr(args, "max_completion_length", None))
        if self.on_collapse == "steer" and self.steering is None:
            if getattr(args, "use_adaptive_entropy", False):
                self.steering = SteerPolicy(float(args.entropy_target), self.steer_step, caller=type(self).__name__)
                if self._steer_restored is not None:  # resumed: TRL reads the target where the run left it
                    self.steering.load_state_dict(self._steer_restored)
                    args.entropy_target = self.steering.value
            else:  # TRL decides at init whether the entropy bonus exists at all: nothing the guard could move
                log.warning("GRPOCollapseGuard: on_collapse='steer' cannot steer this run: TRL's entropy bonus is off, "
                            "and TRL fixes that when the trainer is built. Pass GRPOConfig(use_adaptive_entropy=True, "
                            "entropy_target=...) to let the guard raise entropy_target while the policy narrows; "
                            "this run only warns")
        self._last_check_step = state.global_step
        warn_unattached(args, type(self).__name__, self._attached)

    # ------------------------------------------------------------------ state
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        # the trail and a halt point at the checkpoint (the last good one); the guard's state rides along in it
        self.engine.note_checkpoint(state.global_step, checkpoint_folder(args, state.global_step))
        save_state(args, state, type(self).__name__,
                   {"guard_state": self.engine.state_dict(), "steer_state": self.steer_state})

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        for name, value in (self._latest if metrics is not None else {}).items():
            metrics.setdefault(f"eval_{name}", value)  # type: ignore[union-attr]

    @property
    def steer_state(self) -> dict[str, Any] | None:
        """The steering policy's state (None without ``on_collapse="steer"`` or before training), saved in checkpoints."""
        return self.steering.state_dict() if self.steering is not None else self._steer_restored

    @steer_state.setter
    def steer_state(self, value: dict[str, Any] | None) -> None:
        self._steer_restored = value
        if value is not None and self.steering is not None:
            self.steering.load_state_dict(value)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, model: Any = None, **kwargs: Any) -> TrainerControl:
        if logs is None or not any(key in logs for key in ("loss", *TRL_STATS)):
            return control  # not a training log (evaluation, the final summary)
        if not self.reward_func.called:
            # TRL scored a batch without the guard's reward function: it would judge nothing, silently
            raise ValueError("GRPOCollapseGuard has seen no groups by the first training log: its reward_func is not "
                             "among the trainer's reward_funcs. Build the trainer with reward_funcs=[..., "
                             "guard.reward_func] and GRPOConfig(reward_weights=[..., 0.0]), or "
                             "reward_funcs=guard.reward_funcs([...]) with correct=(name, threshold)")
        self.rollout.observe_stats(**{name: logs[name] for name in TRL_STATS if name in logs})
        if state.global_step - self._last_check_step < self.every_n_steps or not self.rollout.pending_groups:
            return control
        self._last_check_step = state.global_step
        outcome = self.rollout.check(state.global_step, epoch=int(state.epoch or 0))
        if self.steering is not None:
            self._steer(args, outcome, state.global_step)
        self._latest = dict(outcome.log_metrics)
        logs.update(outcome.log_metrics)  # this guard runs first: report_to integrations read them next
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(outcome.log_metrics)
        if outcome.should_stop:
            control.should_training_stop = True
            log.error("%s", outcome.reason)
        return control
